"""Tiny-Janus pieces: tokenizer, prompt format, VQ code consistency with HF, sampling/training
alignment (the adapter's CFG sampler's log-probs equal the SFT teacher-forced recompute), and
resumable pretraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from pairuni_sidecar.shapesworld.formats import PromptFormat  # noqa: E402
from pairuni_sidecar.adapters.janus import JanusAdapter  # noqa: E402
from pairuni_sidecar.shapesworld.model import TinySizes, adapter_options, build_config, special_ids, to_pixels  # noqa: E402
from pairuni_sidecar.shapesworld.render import render  # noqa: E402
from pairuni_sidecar.shapesworld.scenes import make_item  # noqa: E402
from pairuni_sidecar.shapesworld.sft import gen_logits  # noqa: E402
from pairuni_sidecar.shapesworld.tokenizer import build_tokenizer, to_hf  # noqa: E402
from pairuni_sidecar.shapesworld.vq import NUM_SCENE_CODES, encode_codes, renorm_codebook, scene_codes, vq_loss  # noqa: E402

SMALL = TinySizes(hidden=32, layers=1, heads=2, intermediate=64, vision_hidden=32, vision_layers=1, codebook=32)


@pytest.fixture(scope="module")
def tok():
    return to_hf(build_tokenizer(PromptFormat()))


@pytest.fixture(scope="module")
def model(tok):
    from transformers import JanusForConditionalGeneration

    torch.manual_seed(0)
    return JanusForConditionalGeneration(build_config(96, SMALL, special_ids(tok))).eval()


def test_tokenizer_covers_every_text_and_keeps_janus_ids(tok, tmp_path):
    assert special_ids(tok) == {"pad": 0, "bos": 1, "eos": 2, "image": 3, "boi": 4, "eoi": 5}
    fmt = PromptFormat()
    unk = tok.unk_token_id
    for i in range(600):
        it = make_item(5, "u_eval", i)
        choice = it.choices["ABCD".index(it.answer)]
        for text in (
            fmt.und_prompt(it.question, it.choices, ""),
            fmt.answer(it.answer, choice),
            fmt.gen_prompt(it.prompt),
        ):
            ids = tok(text).input_ids
            assert ids[0] == tok.bos_token_id and unk not in ids, text
    # answer tags are whole tokens that survive skip_special_tokens
    ids = tok(fmt.answer("C", "left of"), add_special_tokens=False).input_ids
    text = tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True)
    assert len(ids) == 7 and "left of" in text and fmt.parse_answer(text) == "C"
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = fmt.gen_prompt("a red circle left of a blue square")
    assert again(text).input_ids == tok(text).input_ids and special_ids(again) == special_ids(tok)


def test_prompt_format_is_configurable_and_validated():
    fmt = PromptFormat.from_json({"answer_template": "Answer: {letter}", "answer_regex": r"Answer:\s*([A-Z])"})
    assert fmt.parse_answer("Answer: B") == "B" and fmt.parse_answer("<answer>B</answer>") is None
    assert PromptFormat().parse_answer("<answer> D </answer>") == "D"
    assert "B. green" in PromptFormat().und_user_text("q?", ["red", "green"])
    with pytest.raises(ValueError):
        PromptFormat.from_json({"answer_tmpl": "x"})
    # a custom format's words enter the vocabulary
    tok = to_hf(build_tokenizer(PromptFormat(instruction="Reply with one letter.")))
    assert tok.unk_token_id not in tok("Reply with one letter.").input_ids


def test_scene_codes_are_one_per_object_type():
    from pairuni_sidecar.shapesworld.scenes import COLOR_NAMES, Obj
    from pairuni_sidecar.shapesworld.vocab import SHAPES

    codes = {int(scene_codes([Obj(s, c, 0, 0)])[0]) for s in SHAPES for c in COLOR_NAMES}
    assert codes == set(range(1, NUM_SCENE_CODES))
    c = scene_codes([Obj("cross", "blue", 2, 3)])
    assert c.shape == (16,) and c.nonzero().flatten().tolist() == [2 * 4 + 3]


def test_vq_training_keeps_hf_encode_equal_to_training_codes(model):
    vq = model.model.vqmodel
    items = [make_item(0, "pretrain", i) for i in range(8)]
    px = to_pixels(torch.from_numpy(np.stack([render(it.objects) for it in items])))
    codes = torch.stack([scene_codes(it.objects) for it in items])
    opt = torch.optim.Adam(vq.parameters(), lr=1e-2)
    renorm_codebook(vq)
    losses = []
    for _ in range(3):
        loss, _ = vq_loss(vq, px, codes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        renorm_codebook(vq)
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    norms = vq.quantize.embedding.weight.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    with torch.no_grad():
        hf = vq.encode(px).image_tokens.view(8, -1)
    assert torch.equal(hf, encode_codes(vq, px))


def test_cfg_sampling_logprobs_match_teacher_forced_recompute(model, tok):
    fmt = PromptFormat()
    ad = JanusAdapter.from_model(model, tok, options=adapter_options(fmt))
    prompts = ["a circle", "a red circle left of a blue square", "three triangles"]  # three lengths
    w = 3.0
    codes, logp = ad.sample_codes(prompts, 2, cfg_weight=w, temperature=1.0, seed=0, return_logp=True)
    images = ad.sample_images(prompts, 2, cfg_weight=w, temperature=1.0, seed=0)
    assert codes.shape == (6, 16) and images.shape == (6, 32, 32, 3) and images.dtype == torch.uint8
    # same seed, same samples; the images are the codes decoded
    assert torch.equal(codes, ad.sample_codes(prompts, 2, cfg_weight=w, temperature=1.0, seed=0))
    assert torch.equal(images, ad.decode_images(codes, chunk=256))
    pad = tok.pad_token_id
    # SFT tokenises the prompts through the same adapter (sft.tokenize_items)
    assert ad.gen_prompt_ids(prompts[1]) == tok(fmt.gen_prompt(prompts[1])).input_ids + [special_ids(tok)["boi"]]
    cond = [ad.gen_prompt_ids(p) for p in prompts for _ in range(2)]
    uncond = [[s[0]] + [pad] * (len(s) - 2) + [s[-1]] for s in cond]
    with torch.no_grad():  # one left-padded batch holding all lengths
        lc = gen_logits(model, cond, codes, pad)
        lu = gen_logits(model, uncond, codes, pad)
    re = torch.log_softmax(lu + w * (lc - lu), -1).gather(-1, codes[..., None]).squeeze(-1)
    assert torch.allclose(re, logp, atol=1e-4), (re - logp).abs().max()


def test_pretraining_is_reproducible_and_resumes_exactly(tmp_path):
    from pairuni_sidecar.shapesworld.pretrain import PretrainConfig, pretrain
    from safetensors.torch import load_file

    cfg = PretrainConfig(
        seed=1,
        n_items=48,
        vq_steps=4,
        vq_batch=4,
        sft_steps=4,
        und_batch=4,
        gen_batch=4,
        warmup=2,
        ckpt_every=2,
        eval_n=6,
        eval_samples=1,
        shape_steps=2,
        mix_steps=2,
        sizes=SMALL.__dict__,
    )
    full = pretrain(tmp_path / "full", cfg, log=lambda m: None)
    assert set(full["metrics"]) >= {"und_accuracy", "gen_reward", "gen_reward_by_category"}

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def stop_in_sft():  # called once per step: 4 VQ steps, then interrupt after SFT step 2's checkpoint
        calls["n"] += 1
        if calls["n"] == 7:
            raise Stop

    with pytest.raises(Stop):
        pretrain(tmp_path / "resumed", cfg, log=lambda m: None, check=stop_in_sft)
    assert (tmp_path / "resumed.work" / "state.pt").exists() and not (tmp_path / "resumed").exists()
    logs = []
    pretrain(tmp_path / "resumed", cfg, log=logs.append)
    assert any("resuming at stage sft step 2" in m for m in logs)
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "resumed.work").exists()


def test_pretraining_resumes_across_sft_length_only(tmp_path):
    """A saved state trains further with a larger sft_steps (constant lr: same weights as a direct run);
    a state past sft_steps, or one written with other weight-relevant settings, is refused."""
    from dataclasses import replace

    from pairuni_sidecar.shapesworld.pretrain import PretrainConfig, pretrain
    from safetensors.torch import load_file

    cfg = PretrainConfig(
        seed=1,
        n_items=24,
        vq_steps=2,
        vq_batch=4,
        sft_steps=4,
        und_batch=4,
        gen_batch=4,
        warmup=1,
        ckpt_every=1,
        eval_n=4,
        eval_samples=1,
        shape_steps=1,
        mix_steps=1,
        sizes=SMALL.__dict__,
    )
    pretrain(tmp_path / "direct", cfg, log=lambda m: None)

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def stop_in_sft_step_2():  # 2 VQ steps + 1 SFT step (checkpointed), then interrupt
        calls["n"] += 1
        if calls["n"] == 4:
            raise Stop

    with pytest.raises(Stop):
        pretrain(tmp_path / "m", replace(cfg, sft_steps=2, eval_every=0), log=lambda m: None, check=stop_in_sft_step_2)
    with pytest.raises(ValueError, match="past sft_steps=0"):
        pretrain(tmp_path / "m", replace(cfg, sft_steps=0), log=lambda m: None)
    with pytest.raises(ValueError, match="other settings"):
        pretrain(tmp_path / "m", replace(cfg, sft_lr=1e-3), log=lambda m: None)
    logs: list[str] = []
    pretrain(tmp_path / "m", cfg, log=logs.append)  # the same state, trained on to 4 SFT steps
    assert any("resuming at stage sft step 1" in m for m in logs)
    a, b = load_file(tmp_path / "direct" / "model.safetensors"), load_file(tmp_path / "m" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_descriptions_name_each_objects_cell_in_reading_order():
    from pairuni_sidecar.shapesworld.scenes import Obj
    from pairuni_sidecar.shapesworld.sft import describe

    objs = [Obj("circle", "blue", 3, 0), Obj("square", "red", 0, 1)]
    assert describe(objs) == "red square one two , blue circle four one"
    assert describe(objs, cells=False) == "red square , blue circle"
