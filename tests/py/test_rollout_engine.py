"""The static-cache rollout engine against the reference (dynamic-cache, one row length per step) loops.

Tokens must be exactly the reference's: the engine draws from the same generator stream as
``torch.multinomial`` (``draw`` below), so equal probabilities give equal tokens. Log-probs are compared
to 1e-5, not bitwise: the engine's batched prefill and decode attend over a static cache of
``P + steps`` key slots (the unwritten ones masked), the reference over exactly the keys written so far,
so SDPA reduces over different lengths and the logits differ in the last bits (measured up to ~5e-7
after CFG's w = 5 amplification on one x86 CPU; 1e-5 is the bound the adapter's recompute tests use).
A flip of a sampled token would need two candidates tied to ~1e-7 relative under the drawn noise, which
the fixed seeds here do not hit; such a flip would fail the token check loudly, not pass silently.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from pairuni_sidecar.adapters import GenItem, LoadSpec, UndItem, load_adapter  # noqa: E402
from pairuni_sidecar.adapters.janus import JanusAdapter  # noqa: E402
from pairuni_sidecar.adapters.tiny import build_tiny_janus  # noqa: E402
from pairuni_sidecar.contract import GenSampling, UndSampling  # noqa: E402
from pairuni_sidecar.rollout import engine as engine_mod  # noqa: E402
from pairuni_sidecar.rollout.engine import StaticDecoder, draw, exp_race_noise  # noqa: E402

LP_TOL = 1e-5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_janus(str(tmp_path_factory.mktemp("janus") / "tiny"), seed=0)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    p = tmp_path_factory.mktemp("img") / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 28, 3), dtype=np.uint8)).save(p)
    return str(p)


@pytest.fixture(scope="module")
def pair(model_dir):
    """(engine adapter, reference adapter) on the same weights."""
    eng = load_adapter("janus", LoadSpec(path=model_dir, device="cpu"))
    ref = load_adapter("janus", LoadSpec(path=model_dir, device="cpu", options={"rollout_engine": "reference"}))
    assert eng.rollout_engine == "static" and not eng.rollout_compile  # the default; compile off on CPU
    return eng, ref


def _same(a, b):
    assert torch.equal(a.out_ids, b.out_ids)
    assert torch.equal(a.out_mask, b.out_mask)
    assert (a.old_logp - b.old_logp).abs().max().item() <= LP_TOL
    assert b.old_logp.abs().max().item() > 0.1  # real log-probs, not zeros compared with zeros


# -- the draw itself ------------------------------------------------------------------------------
def test_draw_is_torch_multinomial_on_the_same_stream():
    torch.manual_seed(0)
    z = torch.randn(5, 40) * 2
    z[3, 7] = float("nan")  # a non-finite row draws uniformly and is flagged
    for seed in range(8):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        probs = torch.softmax(z, -1)
        ok_ref = torch.isfinite(probs).all(-1)
        probs = torch.where(ok_ref.unsqueeze(-1), probs, torch.ones_like(probs))
        want = torch.multinomial(probs, 1, generator=g1).squeeze(-1)
        tok, lp, ok = draw(z, exp_race_noise(z, g2))
        assert torch.equal(tok, want) and torch.equal(ok, ok_ref) and ok.tolist() == [1, 1, 1, 0, 1]
        assert torch.equal(g1.get_state(), g2.get_state())  # the same number of draws consumed
        want_lp = torch.log_softmax(z, -1).gather(-1, tok[:, None]).squeeze(-1)
        assert torch.equal(lp[ok], want_lp[ok]) and lp[~ok].isnan().all()


def test_draw_frequencies_follow_softmax_and_greedy_is_argmax():
    z = torch.tensor([[0.0, 1.0, 2.0]]).expand(20000, 3).contiguous()
    g = torch.Generator().manual_seed(1)
    tok, lp, _ = draw(z, exp_race_noise(z, g))
    freq = torch.bincount(tok, minlength=3).float() / tok.numel()
    p = torch.tensor([1.0, np.e, np.e**2]) / (1 + np.e + np.e**2)  # 0.090, 0.245, 0.665
    assert (freq - p).abs().max().item() < 0.015
    assert torch.allclose(lp.exp(), p[tok])
    tok, lp, ok = draw(torch.tensor([[0.5, 3.0, -1.0], [float("inf"), 0.0, 0.0]]), None)
    assert tok[0].item() == 1 and ok.tolist() == [True, False]


# -- engine == reference -----------------------------------------------------------------------------
@pytest.mark.parametrize("cfg_weight,temperature", [(5.0, 1.0), (1.0, 1.0), (3.0, 0.7)])
def test_gen_engine_equals_reference_ragged_prompts(pair, cfg_weight, temperature):
    eng, ref = pair
    items = [GenItem("a red circle"), GenItem("two blue squares on the left"), GenItem("x")]
    s = GenSampling(seed=11, cfg_weight=cfg_weight, temperature=temperature)
    a, b = eng.gen_rollout(items, 2, s), ref.gen_rollout(items, 2, s)
    pm = b.extra["prompt_mask"]
    assert len(set(pm[:, 0].sum(-1).tolist())) == 3  # three prompt lengths: left padding is exercised
    _same(a, b)
    assert torch.equal(a.images, b.images)


def test_gen_engine_records_the_distribution_it_sampled(pair, monkeypatch):
    """On-policy guarantee, engine side: every recorded log-prob is log_softmax(z)[tok] of the very z and
    noise the token was drawn with (recomputed here independently of ``draw``)."""
    eng, _ = pair
    seen = []
    real = engine_mod.draw

    def spy(z, noise):
        seen.append((z.clone(), noise.clone()))
        return real(z, noise)

    monkeypatch.setattr(engine_mod, "draw", spy)
    b = eng.gen_rollout([GenItem("a cat"), GenItem("a much longer dog prompt")], 2, GenSampling(seed=3, cfg_weight=4.0))
    assert len(seen) == eng.num_image_tokens
    for t, (z, noise) in enumerate(seen):
        tok = (torch.softmax(z, -1) / noise).argmax(-1)
        assert torch.equal(b.out_ids[:, t], tok)
        assert torch.equal(b.old_logp[:, t], torch.log_softmax(z, -1).gather(-1, tok[:, None]).squeeze(-1))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_und_engine_equals_reference_ragged_prompts(pair, image, temperature):
    eng, ref = pair
    items = [UndItem(image, "Short?"), UndItem(image, "A much longer question with choices A. x B. y")]
    s = UndSampling(seed=1, max_new_tokens=24, temperature=temperature)
    a, b = eng.und_rollout(items, 3, s), ref.und_rollout(items, 3, s)
    _same(a, b)
    assert a.texts == b.texts


@pytest.fixture(scope="module")
def eos_prone(model_dir):
    """The tiny model with the answer head biased towards EOS, so rows stop at different steps and every
    row stops well before max_new_tokens: the engine (which checks for 'all finished' only every few
    steps) must trim its output exactly where the reference loop stopped."""
    ref = load_adapter("janus", LoadSpec(path=model_dir, device="cpu", options={"rollout_engine": "reference"}))
    m = ref.model
    old = m.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[ref.eos_id] = 3.0
    m.lm_head = head
    eng = JanusAdapter.from_model(m, ref.tok)
    return eng, JanusAdapter.from_model(m, ref.tok, options={"rollout_engine": "reference"})


def test_und_engine_trims_at_eos_like_the_reference(eos_prone, image):
    eng, ref = eos_prone
    items = [UndItem(image, "Q?"), UndItem(image, "Another, longer question?")]
    s = UndSampling(seed=5, max_new_tokens=60, temperature=1.0)
    a, b = eng.und_rollout(items, 4, s), ref.und_rollout(items, 4, s)
    _same(a, b)
    L = b.out_ids.shape[1]
    assert L < 60 and a.out_ids.shape[1] == L  # stopped early, at the same step
    lengths = b.out_mask.sum(-1)
    assert lengths.max().item() == L and lengths.min().item() < L  # rows finished at different steps
    assert (a.out_ids[~a.out_mask] == eng.pad_id).all() and (a.old_logp[~a.out_mask] == 0).all()


def test_eval_decoding_engine_equals_reference(pair):
    """Greedy answers and image codes (unpadded length buckets, one generator across batches)."""
    eng, ref = pair
    imgs = torch.from_numpy(np.random.default_rng(2).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8))
    texts = ["Q?", "What is it?", "Q!"]
    assert eng.greedy_tokens(imgs, texts, max_new_tokens=8) == ref.greedy_tokens(imgs, texts, max_new_tokens=8)
    prompts = ["a red circle", "b", "c", "two squares"]
    ca, la = eng.sample_codes(prompts, 2, cfg_weight=3.0, temperature=1.0, seed=4, max_rows=4, return_logp=True)
    cb, lb = ref.sample_codes(prompts, 2, cfg_weight=3.0, temperature=1.0, seed=4, max_rows=4, return_logp=True)
    assert torch.equal(ca, cb) and (la - lb).abs().max().item() <= LP_TOL


def test_compiled_step_is_one_graph_and_reproduces_the_eager_engine(pair):
    """The decode step traces as a single graph (fullgraph: no graph break, StaticCache mutation
    included) and is not retraced between steps or rollouts, even when the longest prompt changes (the
    cache length is bucketed). ``backend="eager"`` checks the tracing on CPU in seconds; the GPU path
    uses the same trace with inductor + CUDA graphs (mode reduce-overhead)."""
    from torch._dynamo.utils import counters

    eng, _ = pair
    batches = [[GenItem("a red circle"), GenItem("bb")], [GenItem("a red circle, larger"), GenItem("c")]]
    s = GenSampling(seed=2, cfg_weight=5.0)
    want = [eng.gen_rollout(items, 2, s) for items in batches]
    assert want[0].extra["prompt_ids"].shape[-1] != want[1].extra["prompt_ids"].shape[-1]
    m = eng.model
    compiled = JanusAdapter.from_model(m, eng.tok, options={"rollout_compile": "on"})
    compiled._decoders["gen", True] = StaticDecoder(  # what _decoder builds, on the eager backend
        m.model.language_model,
        m.config.text_config,
        head=m.model.generation_head,
        embed_next=m.prepare_embeddings_for_image_generation,
        compile=True,
        compile_options={"backend": "eager", "mode": None, "fullgraph": True},
    )
    torch._dynamo.reset()
    counters.clear()
    for i in (0, 1, 0):
        got = compiled.gen_rollout(batches[i], 2, s)
        assert torch.equal(got.out_ids, want[i].out_ids) and torch.equal(got.old_logp, want[i].old_logp)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    # evaluation batches vary in shape: they run the eager step, never (re)compiling the rollout one
    compiled.sample_codes(["x", "a longer prompt"], 1, cfg_weight=2.0, temperature=1.0, seed=0)
    assert set(compiled._decoders) == {("gen", True), ("gen", False)}
    assert not compiled._decoders["gen", False].compile and counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()
