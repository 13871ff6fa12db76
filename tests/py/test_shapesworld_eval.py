"""Held-out evaluation through the policy adapter (``shapesworld.evaluate`` on ``PolicyAdapter.greedy_answers``
and ``sample_images``).

- Family-neutral: a scripted adapter (no model) gets hand-computable metrics, and receives exactly the
  MCQ user texts, images and sampling settings; an adapter without the two methods is refused.
- Janus: answers are greedy and image codes follow the full softmax of ``(u + w (c - u)) / T``, both
  checked against a straightforward reference (one row at a time, no KV cache, no batching) with a
  tolerance for float noise, on a tiny random ShapesWorld Janus and on the shipped asset.
- Evaluation is reproducible from its seeds; the model-directory, in-memory, built-dataset and CLI
  paths give the same numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from pairuni_sidecar.adapters.base import CapabilityError, PolicyAdapter  # noqa: E402
from pairuni_sidecar.adapters.janus import JanusAdapter, cfg_mix  # noqa: E402
from pairuni_sidecar.shapesworld.reward import ShapesScorer  # noqa: E402
from pairuni_sidecar.shapesworld.evaluate import (  # noqa: E402
    evaluate,
    evaluate_adapter,
    evaluate_model_dir,
    heldout_items,
    load_eval_adapter,
)
from pairuni_sidecar.shapesworld.formats import PromptFormat  # noqa: E402
from pairuni_sidecar.shapesworld.model import TinySizes, build_config, save_model_dir, special_ids, to_pixels  # noqa: E402
from pairuni_sidecar.shapesworld.render import render  # noqa: E402
from pairuni_sidecar.shapesworld.scenes import make_item  # noqa: E402
from pairuni_sidecar.shapesworld.tokenizer import build_tokenizer, to_hf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ASSET = ROOT / "assets" / "tiny-janus-shapes"
SMALL = TinySizes(hidden=32, layers=1, heads=2, intermediate=64, vision_hidden=32, vision_layers=1, codebook=32)
QUICK = dict(seed=0, n=6, n_und=8, samples=2, cfg_weight=3.0, temperature=1.0, sample_seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random-init ShapesWorld Janus saved as a model directory (weights, tokenizer, model card)."""
    from transformers import JanusForConditionalGeneration

    fmt = PromptFormat()
    tok = to_hf(build_tokenizer(fmt))
    torch.manual_seed(0)
    model = JanusForConditionalGeneration(build_config(-(-len(tok) // 16) * 16, SMALL, special_ids(tok))).eval()
    d = tmp_path_factory.mktemp("sw") / "model"
    save_model_dir(model, tok, fmt, d)
    return model, tok, fmt, str(d)


@pytest.fixture(scope="module", params=["tiny", "asset"])
def policy(request, tiny):
    """(adapter loaded from the model directory, prompt format)."""
    return load_eval_adapter(tiny[3] if request.param == "tiny" else ASSET)


# -- family-neutral -------------------------------------------------------------------------------
class ScriptedAdapter(PolicyAdapter):
    """No model: answers 'A' (every third answer unparseable); sample 0 of each prompt is the
    ground-truth render, later samples are blank canvases."""

    family = "scripted"
    capabilities = frozenset()

    def __init__(self, truth: dict[str, list]) -> None:
        self.truth, self.calls = truth, []
        self.device = torch.device("cpu")

    def greedy_answers(self, images, texts, *, max_new_tokens=16):
        self.calls.append(("und", images.clone(), list(texts)))
        return ["no tags" if i % 3 == 2 else "<think>x</think><answer>A</answer>" for i in range(len(texts))]

    def sample_images(self, prompts, n, *, cfg_weight, temperature, seed):
        self.calls.append(("gen", list(prompts), n, cfg_weight, temperature, seed))
        blank = render([])
        return torch.from_numpy(
            np.stack([render(self.truth[p]) if k == 0 else blank for p in prompts for k in range(n)])
        )

    def und_rollout(self, *args, **kwargs):
        raise AssertionError("held-out evaluation must use only greedy_answers and sample_images")

    gen_rollout = token_logprobs = sft_loss = save_pretrained = und_rollout

    def trainable_parameters(self):
        return []

    def describe(self):
        return {"family": self.family}


def test_any_adapter_gets_the_evaluation_with_hand_computable_numbers(tmp_path):
    fmt = PromptFormat()
    n, n_und, samples = 12, 9, 2
    truth = {make_item(4, "g_eval", i).prompt: make_item(4, "g_eval", i).objects for i in range(n)}
    ad = ScriptedAdapter(truth)
    res = evaluate_adapter(
        ad,
        fmt,
        seed=4,
        n=n,
        n_und=n_und,
        samples=samples,
        cfg_weight=2.5,
        temperature=0.8,
        sample_seed=9,
        grid=str(tmp_path / "g.png"),
        grid_n=4,
    )
    und, gen, imgs = heldout_items(None, 4, n, n_und)
    (_, seen_imgs, seen_texts), (_, prompts, k, w, t, seed) = ad.calls
    assert torch.equal(seen_imgs, imgs)
    assert seen_texts == [fmt.und_user_text(r["question"], r["choices"]) for r in und]
    assert prompts == [r["prompt"] for r in gen] and (k, w, t, seed) == (samples, 2.5, 0.8, 9)
    answered = [i % 3 != 2 for i in range(n_und)]
    correct = [a and r["answer"] == "A" for a, r in zip(answered, und)]
    assert res["und_format_rate"] == round(float(np.mean(answered)), 4)
    assert res["und_accuracy"] == round(float(np.mean(correct)), 4)
    graded, binary = ShapesScorer().score_both(torch.from_numpy(np.stack([render(truth[p]) for p in prompts])), prompts)
    assert torch.all(graded == 1.0) and torch.all(binary == 1.0)  # the renderer's truth scores full marks
    assert res["gen_reward"] == res["gen_binary"] == 0.5  # one perfect and one blank sample per prompt
    assert set(res["gen_reward_by_category"].values()) == {0.5}
    assert (res["n_und"], res["n_gen_prompts"], res["samples_per_prompt"]) == (n_und, n, samples)
    assert res["grid_prompts"] == prompts[:4] and res["grid_rewards"] == [1.0] * 4
    assert (tmp_path / "g.png").stat().st_size > 0


def test_an_adapter_without_the_evaluation_methods_is_refused():
    class Bare(ScriptedAdapter):
        greedy_answers = PolicyAdapter.greedy_answers
        sample_images = PolicyAdapter.sample_images

    ad = Bare({})
    with pytest.raises(CapabilityError, match="greedy_answers"):
        evaluate_adapter(ad, PromptFormat(), n=2, n_und=2, samples=1)
    with pytest.raises(CapabilityError, match="sample_images"):
        ad.sample_images(["a"], 1, cfg_weight=1.0, temperature=1.0, seed=0)


def test_cfg_mix_hand_values():
    lg = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 1.0], [2.0, 2.0, 2.0], [1.0, 0.0, -1.0]])  # c0, u0, c1, u1
    assert cfg_mix(lg, 3.0).tolist() == [[3.0, 4.0, 7.0], [4.0, 6.0, 8.0]]
    assert cfg_mix(lg, 1.0).tolist() == lg[0::2].tolist() and cfg_mix(lg, 0.0).tolist() == lg[1::2].tolist()
    p = torch.softmax(cfg_mix(lg, 3.0)[0] / 2.0, -1)
    e = np.exp([1.5, 2.0, 3.5])
    assert np.allclose(p.numpy(), e / e.sum(), atol=1e-7)


# -- Janus against a straightforward reference ------------------------------------------------------
def _ref_answer_logits(ad: JanusAdapter, prompt: list[int], image: torch.Tensor, answer: list[int]) -> torch.Tensor:
    """Text logits at every answer position (and the one after), one full uncached forward."""
    x = torch.tensor([prompt + answer])
    pix = ((image[None].permute(0, 3, 1, 2).float() / 255.0) - ad.image_mean) / ad.image_std
    with torch.no_grad():
        return ad.model(input_ids=x, pixel_values=pix).logits[0, len(prompt) - 1 :].float()


def _ref_gen_logits(ad: JanusAdapter, prompt: list[int], codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Generation-head logits (cond, uncond) at each code position, one row at a time, no cache."""
    m = ad.model
    out = []
    for ids in (prompt, [prompt[0]] + [ad.pad_id] * (len(prompt) - 2) + [prompt[-1]]):
        emb = torch.cat(
            [m.get_input_embeddings()(torch.tensor([ids])), m.prepare_embeddings_for_image_generation(codes[None])], 1
        )
        with torch.no_grad():
            h = m.model.language_model(inputs_embeds=emb).last_hidden_state[0]
            out.append(m.model.generation_head(h[len(ids) - 1 : -1]).float())
    return out[0], out[1]


def test_greedy_answers_are_argmax_under_a_reference_forward(policy):
    ad, fmt = policy
    und, _, imgs = heldout_items(None, 2, 1, 10)
    texts = [fmt.und_user_text(r["question"], r["choices"]) for r in und]
    toks = ad.greedy_tokens(imgs, texts, max_new_tokens=12)
    assert ad.greedy_answers(imgs, texts, max_new_tokens=12) == [
        ad.tok.decode(t, skip_special_tokens=True) for t in toks
    ]
    ended = 0
    for text, image, answer in zip(texts, imgs, toks):
        logits = _ref_answer_logits(ad, ad.und_prompt_ids(text), image, answer)
        for t, tok in enumerate(answer):  # each token is the argmax (up to float noise)
            assert logits[t, tok] >= logits[t].max() - 1e-4, (t, tok)
        if len(answer) < 12:  # stopped: EOS was the argmax next
            ended += 1
            assert logits[len(answer), ad.eos_id] >= logits[len(answer)].max() - 1e-4
    if ad.source_dir and "tiny-janus-shapes" in ad.source_dir:
        assert ended == len(toks)  # the trained asset ends every answer


@pytest.mark.parametrize("w", [3.0, 1.0])
def test_image_codes_follow_the_guided_softmax_of_a_reference_forward(policy, w):
    ad, _ = policy
    prompts = ["a circle", "a red circle left of a blue square", "three triangles", "a blue star"]  # 3 lengths
    # the sampler's log-probs are those of the guided distribution at T = 0.7
    codes, logp = ad.sample_codes(prompts, 2, cfg_weight=w, temperature=0.7, seed=1, return_logp=True)
    assert codes.shape == (8, ad.num_image_tokens) and torch.equal(
        codes, ad.sample_codes(prompts, 2, cfg_weight=w, temperature=0.7, seed=1)
    )
    # near-zero temperature: the drawn code maximises u + w (c - u)
    cold = ad.sample_codes(prompts, 2, cfg_weight=w, temperature=1e-4, seed=1)
    wrong_w = 0
    for r, p in enumerate(p for p in prompts for _ in range(2)):
        c, u = _ref_gen_logits(ad, ad.gen_prompt_ids(p), codes[r])
        z = u + w * (c - u)
        ref = torch.log_softmax(z / 0.7, -1).gather(-1, codes[r][:, None]).squeeze(-1)
        assert torch.allclose(ref, logp[r], atol=1e-4), (ref - logp[r]).abs().max()
        c, u = _ref_gen_logits(ad, ad.gen_prompt_ids(p), cold[r])
        z = u + w * (c - u)
        picked = z.gather(-1, cold[r][:, None]).squeeze(-1)
        assert torch.all(picked >= z.max(-1).values - 3e-3)
        z_other = u + (w + 2.0) * (c - u)
        wrong_w += int((z_other.gather(-1, cold[r][:, None]).squeeze(-1) < z_other.max(-1).values - 3e-3).any())
    assert wrong_w > 0  # the check tells guidance weights apart


def test_sampling_is_seeded_and_decodes_the_codes(policy):
    ad, _ = policy
    prompts = ["a circle", "two red squares"]
    a = ad.sample_images(prompts, 2, cfg_weight=3.0, temperature=1.0, seed=5)
    assert a.dtype == torch.uint8 and a.shape[0] == 4 and a.shape[-1] == 3
    assert torch.equal(a, ad.sample_images(prompts, 2, cfg_weight=3.0, temperature=1.0, seed=5))
    assert torch.equal(
        a, ad.decode_images(ad.sample_codes(prompts, 2, cfg_weight=3.0, temperature=1.0, seed=5), chunk=256)
    )
    assert not torch.equal(
        ad.sample_codes(prompts, 2, cfg_weight=3.0, temperature=1.0, seed=5),
        ad.sample_codes(prompts, 2, cfg_weight=3.0, temperature=1.0, seed=6),
    )


def test_pixels_of_in_memory_images_equal_pixels_of_their_pngs(tiny, tmp_path):
    from PIL import Image

    ad = JanusAdapter.from_model(tiny[0], tiny[1])
    _, _, imgs = heldout_items(None, 1, 1, 3)
    paths = []
    for i, im in enumerate(imgs):
        Image.fromarray(im.numpy()).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    assert torch.equal(ad.pixels_from_uint8(imgs), ad.pixels(paths))
    assert torch.equal(ad.pixels_from_uint8(imgs), to_pixels(imgs))  # mean = std = 0.5: the [-1, 1] scaling


# -- evaluation ---------------------------------------------------------------------------------------
def _check_consistent(res: dict, n: int, n_und: int, samples: int) -> None:
    und, gen, _ = heldout_items(None, QUICK["seed"], n, n_und)
    for key, cats, total in (
        ("und_accuracy_by_category", [r["category"] for r in und], "und_accuracy"),
        ("gen_reward_by_category", [r["category"] for r in gen], "gen_reward"),
        ("gen_binary_by_category", [r["category"] for r in gen], "gen_binary"),
    ):
        by = res[key]
        assert set(by) == set(cats)
        mean = sum(by[c] * cats.count(c) for c in by) / len(cats)
        assert abs(mean - res[total]) <= 1e-3, (key, mean, res[total])
    assert 0.0 <= res["und_accuracy"] <= res["und_format_rate"] <= 1.0
    assert (res["n_und"], res["n_gen_prompts"], res["samples_per_prompt"]) == (n_und, n, samples)


def test_evaluation_is_reproducible_and_its_paths_agree(tiny, tmp_path):
    from pairuni_sidecar.shapesworld.dataset import build_dataset

    model, tok, fmt, d = tiny
    ad, _ = load_eval_adapter(d)
    a = evaluate_adapter(ad, fmt, **QUICK, grid=str(tmp_path / "a.png"), grid_n=4)
    b = evaluate_adapter(ad, fmt, **QUICK, grid=str(tmp_path / "b.png"), grid_n=4)
    assert {**a, "grid": ""} == {**b, "grid": ""}
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    _check_consistent(a, QUICK["n"], QUICK["n_und"], QUICK["samples"])
    c = evaluate_adapter(ad, fmt, **{**QUICK, "sample_seed": 1}, grid=str(tmp_path / "c.png"), grid_n=4)
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()
    assert c["und_accuracy_by_category"] == a["und_accuracy_by_category"]  # greedy: no sampling seed
    # the same numbers from the directory loader, the in-memory wrapper and a built dataset (the demo's --data)
    assert (
        evaluate_model_dir(d, **QUICK)
        == evaluate(model, tok, fmt, **QUICK)
        == {k: v for k, v in a.items() if not k.startswith("grid")}
    )
    world = tmp_path / "world"
    build_dataset(
        world, seed=QUICK["seed"], sizes={"u_train": 0, "g_train": 0, "u_eval": QUICK["n_und"], "g_eval": QUICK["n"]}
    )
    assert evaluate_model_dir(d, **{**QUICK, "data": str(world)}) == evaluate_model_dir(d, **QUICK)


def test_cli_eval_prints_the_same_numbers(tiny, tmp_path):
    d = tiny[3]
    args = [
        "--seed",
        "0",
        "--n",
        "4",
        "--n-und",
        "5",
        "--samples",
        "1",
        "--sample-seed",
        "3",
        "--grid",
        str(tmp_path / "g.png"),
        "--grid-n",
        "4",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "pairuni_sidecar.shapesworld", "eval", "--model", d, *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "python_sidecar")},
    )
    res = json.loads(out.stdout)
    want = evaluate_model_dir(d, seed=0, n=4, n_und=5, samples=1, sample_seed=3, grid=str(tmp_path / "h.png"), grid_n=4)
    assert {**res, "grid": ""} == {**want, "grid": ""}
    assert (tmp_path / "g.png").read_bytes() == (tmp_path / "h.png").read_bytes()
    assert "eval: generation done" in out.stderr


def test_missing_model_card_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="pairuni_model.json"):
        load_eval_adapter(tmp_path)
