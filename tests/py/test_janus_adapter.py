"""Janus adapter on a tiny random-init model saved and loaded through the real from_pretrained path."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from pairuni_sidecar.errors import BadRequest  # noqa: E402
from pairuni_sidecar.contract import GenSampling, UndSampling  # noqa: E402
from pairuni_sidecar.adapters import (  # noqa: E402
    AdapterConfigError,
    CheckpointNotFound,
    GenItem,
    LoadSpec,
    SFTExample,
    UndItem,
    load_adapter,
)
from pairuni_sidecar.adapters.janus import ImageReadError, _mask_through_eos, _positions  # noqa: E402
from pairuni_sidecar.adapters.tiny import build_tiny_janus  # noqa: E402
from pairuni_sidecar.errors import OpFailed  # noqa: E402
from pairuni_sidecar.policy import NonFiniteError  # noqa: E402


def U(**kw) -> UndSampling:
    """The understanding sampling record as the trainer sends it (defaults from src/contract)."""
    for k in ("cfg_weight", "logp"):  # generation-only fields
        kw.pop(k, None)
    return UndSampling(**{"seed": 0, **kw})


def G(**kw) -> GenSampling:
    kw.pop("max_new_tokens", None)  # an understanding-only field
    return GenSampling(**{"seed": 0, **kw})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_janus(str(tmp_path_factory.mktemp("janus") / "tiny"), seed=0)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    p = tmp_path_factory.mktemp("img") / "a.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 28, 3), dtype=np.uint8)).save(p)
    return str(p)


@pytest.fixture(scope="module")
def adapter(model_dir):
    return load_adapter("janus", LoadSpec(path=model_dir, device="cpu"))


def test_loads_geometry_from_config_not_576(adapter):
    d = adapter.describe()
    assert d["image_size"] == 32 and d["num_image_tokens"] == 16 and d["vq_image_size"] == 16
    assert d["special_ids"] == {"pad": 0, "bos": 1, "eos": 2, "boi": 4, "eoi": 5, "image": 3}
    ids = adapter.und_prompt_ids("Q?")
    assert ids.count(3) == 16 and ids[0] == 1
    assert ids.index(4) + 17 == ids.index(5)  # BOI, 16 x IMG, EOI
    assert adapter.gen_prompt_ids("a cat")[-1] == 4


def test_system_prompts_per_task_default_to_upstream(adapter, tmp_path):
    from transformers.models.janus.processing_janus import DEFAULT_SYSTEM_PROMPT

    # the tiny model's config pins empty prompts: its ids are as before the per-task prompts
    assert (
        adapter.system_prompts == {"und": None, "gen": None} and adapter._system("und") == adapter._system("gen") == ""
    )
    assert adapter.und_prompt_ids("Q?")[:2] == [adapter.bos_id] + adapter._enc("<")
    # a config without a pin (a real checkpoint): understanding gets Janus' VLChatProcessor.system_prompt +
    # the DeepSeek separator, as transformers' port prepends it; generation none (upstream's t2i examples)
    model_dir = build_tiny_janus(str(tmp_path / "unpinned"), seed=0, system_prompts=None)
    adapter = load_adapter("janus", LoadSpec(path=model_dir, device="cpu"))
    assert adapter._system("und") == DEFAULT_SYSTEM_PROMPT and adapter._system("gen") == ""
    sys_ids = adapter._enc(DEFAULT_SYSTEM_PROMPT)
    assert adapter.und_prompt_ids("Q?")[1 : 1 + len(sys_ids)] == sys_ids
    assert adapter.gen_prompt_ids("a cat") == [adapter.bos_id] + adapter._enc("<|User|>: a cat\n\n<|Assistant|>:") + [
        adapter.boi_id
    ]
    pinned = load_adapter(
        "janus", LoadSpec(path=model_dir, device="cpu", options={"und_system_prompt": "", "gen_system_prompt": "Draw."})
    )
    assert pinned.und_prompt_ids("Q?")[:2] == [adapter.bos_id] + adapter._enc("<")
    assert pinned.gen_prompt_ids("a")[1 : 1 + len(adapter._enc("Draw.\n\n"))] == adapter._enc("Draw.\n\n")


def test_default_trainable_is_language_model_only(adapter):
    names = [n for n, _ in adapter.trainable_parameters()]
    assert names and all(n.startswith(("model.language_model.", "lm_head.")) for n in names)
    assert any(n.startswith("lm_head.") for n in names)
    assert not any(
        p.requires_grad for n, p in adapter.model.named_parameters() if n.startswith("model.generation_head.")
    )


def test_mask_through_eos_hand_values():
    out = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 0, 0, 0]])
    assert _mask_through_eos(out, 2).tolist() == [[True, True, False, False], [True] * 4, [True, False, False, False]]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_und_sampled_logprobs_match_recomputed(adapter, image, temperature):
    items = [UndItem(image, "Short?"), UndItem(image, "A much longer question with choices A. x B. y")]
    b = adapter.und_rollout(items, 3, U(max_new_tokens=10, temperature=temperature, seed=1))
    assert b.out_ids.shape[0] == 6 and b.group.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(b.texts) == 6
    lp, mask = adapter.token_logprobs(b, torch.arange(6), est_seed=0, grad=False)
    assert torch.equal(mask, b.out_mask)
    assert (lp - b.old_logp).abs().max().item() <= 1e-5
    assert (b.old_logp[b.out_mask] < 0).all()


def test_und_alignment_one_token_shift(adapter, image):
    """logp[:, k] must score out[k] given prompt + out[:k]; an off-by-one slice would fail this."""
    b = adapter.und_rollout([UndItem(image, "Q?")], 1, U(max_new_tokens=3, seed=3))
    lp, _ = adapter.token_logprobs(b, torch.arange(1), est_seed=0, grad=False)
    x, m = b.extra, adapter.model
    with torch.no_grad():
        for k in range(3):
            ids = torch.cat([x["prompt_ids"], b.out_ids[:, :k]], 1)
            emb = adapter._und_embeds(m, ids, x["feats"])
            logits = m(inputs_embeds=emb, attention_mask=torch.ones_like(ids), logits_to_keep=1).logits[0, -1]
            want = torch.log_softmax(logits.float(), -1)[b.out_ids[0, k]]
            assert abs(float(lp[0, k]) - float(want)) < 1e-5
        # the wrong alignment (logit at position P+k scoring out[k]) is measurably different
        ids = torch.cat([x["prompt_ids"], b.out_ids[:, :1]], 1)
        logits = m(inputs_embeds=adapter._und_embeds(m, ids, x["feats"]), logits_to_keep=1).logits[0, -1]
        assert abs(float(torch.log_softmax(logits, -1)[b.out_ids[0, 0]]) - float(lp[0, 0])) > 1e-4


def test_gen_cfg_logprobs_match_recomputed_and_images(adapter):
    items = [GenItem("a red circle"), GenItem("two blue squares on the left")]
    b = adapter.gen_rollout(items, 3, G(cfg_weight=5.0, seed=2))
    assert b.out_ids.shape == (6, 16) and b.out_mask.all()
    assert b.images.dtype == torch.uint8 and b.images.shape == (6, 16, 16, 3)
    lp, _ = adapter.token_logprobs(b, torch.arange(6), est_seed=0, grad=False)
    assert (lp - b.old_logp).abs().max().item() <= 1e-5
    # uncond rows: BOS, pads, BOI (same length as the cond row)
    ids, pm = b.extra["prompt_ids"][0], b.extra["prompt_mask"][0]
    unc = ids[1][pm[1].bool()].tolist()
    assert unc[0] == 1 and unc[-1] == 4 and set(unc[1:-1]) == {0}
    assert int(pm[0].sum()) == int(pm[1].sum())


def test_gen_alignment_first_code_from_boi(adapter):
    b = adapter.gen_rollout([GenItem("x")], 1, G(cfg_weight=3.0, seed=4))
    lp, _ = adapter.token_logprobs(b, torch.arange(1), est_seed=0, grad=False)
    m = adapter.model
    with torch.no_grad():
        ids = b.extra["prompt_ids"][0]  # (2, P): cond, uncond
        h = m.model.language_model(input_ids=ids, attention_mask=b.extra["prompt_mask"][0]).last_hidden_state[:, -1]
        lg = m.model.generation_head(h).float()
        z = lg[1] + 3.0 * (lg[0] - lg[1])
        want = torch.log_softmax(z, -1)[b.out_ids[0, 0]]
    assert abs(float(lp[0, 0]) - float(want)) < 1e-5


def test_gen_cond_mode_old_logp_is_conditional_forward(adapter):
    s = G(cfg_weight=5.0, seed=5, logp="cond")
    b = adapter.gen_rollout([GenItem("a cat")], 2, s)
    lp, _ = adapter.token_logprobs(b, torch.arange(2), est_seed=0, grad=False)
    assert torch.allclose(lp, b.old_logp, atol=1e-6)
    b.extra["gen_logp"] = "cfg"
    lp_cfg, _ = adapter.token_logprobs(b, torch.arange(2), est_seed=0, grad=False)
    assert (lp_cfg - lp).abs().max() > 1e-3  # cond-only and guided distributions differ


def test_same_seed_same_rollout(adapter, image):
    s = U(max_new_tokens=6, seed=9)
    a = adapter.und_rollout([UndItem(image, "Q")], 2, s)
    b = adapter.und_rollout([UndItem(image, "Q")], 2, s)
    assert torch.equal(a.out_ids, b.out_ids) and a.texts == b.texts
    g1 = adapter.gen_rollout([GenItem("p")], 2, G(seed=9))
    g2 = adapter.gen_rollout([GenItem("p")], 2, G(seed=9))
    assert torch.equal(g1.out_ids, g2.out_ids) and torch.equal(g1.images, g2.images)


def test_grad_path_with_checkpointing_equals_no_grad(adapter, image):
    b = adapter.und_rollout([UndItem(image, "Q")], 2, U(max_new_tokens=5, seed=1))
    adapter.train_mode(True)
    try:
        lp, _ = adapter.token_logprobs(b, torch.arange(2), est_seed=0, grad=True)
        assert lp.requires_grad
        lp.sum().backward()
    finally:
        adapter.train_mode(False)
    grads = [p.grad for _, p in adapter.trainable_parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    for _, p in adapter.trainable_parameters():
        p.grad = None
    assert torch.allclose(lp.detach(), b.old_logp, atol=1e-5)


def test_sft_loss_matches_manual_mean_nll(adapter, image, tmp_path):
    losses = adapter.sft_loss([SFTExample("und", image, "Q?", "B"), SFTExample("gen", image, "a picture")])
    assert set(losses) == {"und", "gen"}
    assert all(torch.isfinite(v) and v.requires_grad for v in losses.values())
    # und: target "B" + EOS -> mean of two token NLLs, computed by hand with stepwise forwards
    m = adapter.model
    with torch.no_grad():
        ids = torch.tensor([adapter.und_prompt_ids("Q?")])
        feats = adapter._image_features(m, adapter.pixels([image]))
        tgt = adapter._enc("B") + [adapter.eos_id]
        nll = []
        for k, t in enumerate(tgt):
            seq = torch.cat([ids, torch.tensor([tgt[:k]], dtype=torch.long)], 1)
            lg = m(inputs_embeds=adapter._und_embeds(m, seq, feats), logits_to_keep=1).logits[0, -1]
            nll.append(-torch.log_softmax(lg, -1)[t])
    assert abs(float(losses["und"].detach()) - float(torch.stack(nll).mean())) < 1e-5


def test_bad_inputs_raise_typed_errors(model_dir, image, tmp_path, adapter):
    with pytest.raises(CheckpointNotFound, match="does not exist"):
        load_adapter("janus", LoadSpec(path=str(tmp_path / "nope"), device="cpu"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(CheckpointNotFound, match="no weight files"):
        load_adapter("janus", LoadSpec(path=str(empty), device="cpu"))
    with pytest.raises(AdapterConfigError, match="train_modules"):
        load_adapter("janus", LoadSpec(path=model_dir, device="cpu", train_modules=("nonsense",)))
    with pytest.raises(BadRequest, match="janus model.options: unknown field.*templat"):
        load_adapter("janus", LoadSpec(path=model_dir, device="cpu", options={"templat": "x"}))
    with pytest.raises(AdapterConfigError, match="unknown adapter"):
        load_adapter("nope", LoadSpec(path=model_dir))
    with pytest.raises(ImageReadError, match="does not exist") as ei:
        adapter.und_rollout([UndItem(str(tmp_path / "missing.png"), "Q")], 2, U(max_new_tokens=2))
    assert ei.value.code == "bad_request"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="cannot decode"):
        adapter.und_rollout([UndItem(str(bad), "Q")], 1, U(max_new_tokens=2))
    with pytest.raises(BadRequest, match="temperature"):
        G(temperature=0.0).validate()


def test_tokenizer_without_image_tokens_is_rejected(model_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["added_tokens"] = [t for t in tj["added_tokens"] if t["content"] != "<begin_of_image>"]
    tj["model"]["vocab"].pop("<begin_of_image>")
    (d / "tokenizer.json").write_text(json.dumps(tj))
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    for k in ("extra_special_tokens", "additional_special_tokens"):
        if isinstance(cfg.get(k), list):
            cfg[k] = [t for t in cfg[k] if t != "<begin_of_image>"]
    atd = cfg.get("added_tokens_decoder")
    if isinstance(atd, dict):
        cfg["added_tokens_decoder"] = {k: v for k, v in atd.items() if v.get("content") != "<begin_of_image>"}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterConfigError, match="begin_of_image"):
        load_adapter("janus", LoadSpec(path=str(d), device="cpu"))


def test_save_pretrained_round_trip(adapter, tmp_path):
    out = tmp_path / "saved"
    adapter.save_pretrained(str(out))
    assert (out / "preprocessor_config.json").exists() and (out / "tokenizer.json").exists()
    b = load_adapter("janus", LoadSpec(path=str(out), device="cpu"))
    for (n1, p1), (n2, p2) in zip(adapter.model.named_parameters(), b.model.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert os.path.isfile(out / "config.json")


def test_positions_left_padding():
    assert _positions(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_old_logp_auto_recomputes_only_under_bf16(model_dir, adapter, image):
    """`auto`: fp32 keeps the sampling pass's log-probs (bit-identical to `rollout`); under bf16
    autocast the old log-probs are the teacher-forced pass's, so the first PPO ratio is exactly 1."""
    items = [GenItem("a red circle")]
    s = dict(cfg_weight=3.0, seed=7)
    fp_auto = adapter.gen_rollout(items, 2, G(old_logp="auto", **s))
    fp_roll = adapter.gen_rollout(items, 2, G(old_logp="rollout", **s))
    assert torch.equal(fp_auto.old_logp, fp_roll.old_logp)

    bf = load_adapter("janus", LoadSpec(path=model_dir, device="cpu", autocast="bf16"))
    for side, its in (("gen", items), ("und", [UndItem(image, "Q?")])):
        S = U if side == "und" else G
        roll = getattr(bf, f"{side}_rollout")(its, 2, S(old_logp="rollout", max_new_tokens=6, **s))
        auto = getattr(bf, f"{side}_rollout")(its, 2, S(old_logp="auto", max_new_tokens=6, **s))
        assert torch.equal(roll.out_ids, auto.out_ids)  # same samples, only the bookkeeping differs
        lp, _ = bf.token_logprobs(auto, torch.arange(auto.size), est_seed=0, grad=False)
        assert torch.equal(lp * auto.out_mask, auto.old_logp * auto.out_mask)
        if side == "gen":  # ...and a real correction: the CFG sampling pass rounds differently in bf16
            assert (roll.old_logp - auto.old_logp).abs().max() > 1e-4
    with pytest.raises(BadRequest, match="old_logp"):  # the generated record's schema refuses it
        U(old_logp="sometimes").validate()


def _scrambled_copy(model_dir: str, dest, **values: float) -> str:
    """A copy of the model directory whose named tensors are filled with a value (NaN, inf) on disk."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, dest)
    f = os.path.join(dest, "model.safetensors")
    sd = load_file(f)
    for name, v in values.items():
        sd[name] = torch.full_like(sd[name], v)
    save_file(sd, f, metadata={"format": "pt"})
    return str(dest)


def test_non_finite_weights_fail_naming_the_model_and_side(model_dir, image, tmp_path):
    """NaN/inf weights: a typed op_failed error naming the model directory and the side, not torch's
    "probability tensor contains either inf, nan or element < 0" from deep inside a rollout."""
    nan_dir = _scrambled_copy(model_dir, tmp_path / "nan", **{"model.language_model.norm.weight": float("nan")})
    bad = load_adapter("janus", LoadSpec(path=nan_dir, device="cpu"))
    und = [UndItem(image, "Q?"), UndItem(image, "Another question?")]
    with pytest.raises(NonFiniteError) as ei:
        bad.und_rollout(und, 2, U(max_new_tokens=4, seed=0))
    assert isinstance(ei.value, OpFailed) and ei.value.code == "op_failed"
    assert "janus und" in str(ei.value) and nan_dir in str(ei.value)
    assert ei.value.detail["model"] == nan_dir and ei.value.detail["side"] == "und"
    assert ei.value.detail["rows"] == [0, 1, 2, 3] and ei.value.detail["step"] == 0
    with pytest.raises(NonFiniteError, match=r"janus gen.*nan") as ei:
        bad.gen_rollout([GenItem("a red circle")], 2, G(cfg_weight=3.0, seed=0))
    assert ei.value.detail["side"] == "gen" and ei.value.detail["model"] == nan_dir
    assert ei.value.detail["rows"] == [0, 1]
    # evaluation decodes through the same loops: greedy answers and image sampling fail the same way
    with pytest.raises(NonFiniteError, match="janus und"):
        bad.greedy_answers(torch.zeros(1, 32, 32, 3, dtype=torch.uint8), ["Q?"], max_new_tokens=2)
    with pytest.raises(NonFiniteError, match="janus gen"):
        bad.sample_codes(["p"], 1, cfg_weight=1.0, temperature=1.0, seed=0)

    # +inf in the answer head only: the understanding side fails, generation still works
    inf_dir = _scrambled_copy(model_dir, tmp_path / "inf", **{"lm_head.weight": float("inf")})
    bad = load_adapter("janus", LoadSpec(path=inf_dir, device="cpu"))
    with pytest.raises(NonFiniteError, match="janus und") as ei:
        bad.und_rollout(und[:1], 1, U(max_new_tokens=4, seed=0))
    assert ei.value.detail["model"] == inf_dir
    assert bad.gen_rollout([GenItem("x")], 1, G(seed=0)).old_logp.isfinite().all()
