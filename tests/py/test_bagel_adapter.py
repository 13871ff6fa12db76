"""Bagel SFT adapter on a tiny random-init model in the BAGEL-7B-MoT directory layout (CPU)."""

import math
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("nemo_automodel.components.models.bagel")

from pairuni_sidecar.adapters import LoadSpec, SFTExample, load_adapter  # noqa: E402
from pairuni_sidecar.adapters.bagel import (  # noqa: E402
    Tokens,
    attention_mask,
    pack_pair,
    patchify,
    shifted_timestep,
)
from pairuni_sidecar.adapters.base import CheckpointNotFound  # noqa: E402
from pairuni_sidecar.adapters.tiny_bagel import build_tiny_bagel  # noqa: E402
from pairuni_sidecar.contract.generated import LoadOptim  # noqa: E402
from pairuni_sidecar.errors import BadRequest  # noqa: E402
from pairuni_sidecar.policy import Policy, load_policy, save_policy  # noqa: E402

TOK = Tokens(bos=1, eos=2, boi=3, eoi=4)
SMALL = {"vae_image_size": 32, "vit_image_size": 28}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bagel")
    build_tiny_bagel(str(root / "model"), seed=0)
    rng = np.random.default_rng(0)
    for i, color in enumerate([(220, 30, 30), (30, 30, 220)]):
        arr = np.zeros((40, 40, 3), np.uint8) + np.array(color, np.uint8)
        arr[10:30, 10:30] = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"im{i}.png")
    return root


def spec(path, **kw):
    opts = {**SMALL, **kw.pop("options", {})}
    return LoadSpec(
        adapter="bagel",
        path=str(path),
        device="cpu",
        autocast="off",
        train_modules=kw.pop("train_modules", ["language_model", "vit"]),
        options=opts,
        **kw,
    )


def examples(root):
    return [
        SFTExample("und", str(root / "im0.png"), "Color? A. red B. blue", "A"),
        SFTExample("gen", str(root / "im0.png"), "a red square"),
        SFTExample("und", str(root / "im1.png"), "Color? A. red B. blue", "B"),
        SFTExample("gen", str(root / "im1.png"), "a blue square"),
    ]


RECIPE = LoadOptim(lr=1e-3, betas=[0.9, 0.95], eps=1e-15, weight_decay=0.0, max_grad_norm=1.0)


# -- packing ---------------------------------------------------------------------------------------


def _pack(drop=False):
    return pack_pair(
        TOK,
        und_image=torch.zeros(3, 28, 42),
        question=[10, 11],
        answer=[20, 21, 22],
        prompt=[30],
        gen_image=torch.zeros(3, 32, 16),
        vit_patch=14,
        vit_max_per_side=8,
        vae_downsample=16,
        latent_max_per_side=8,
        timestep=0.25,
        drop_prompt=drop,
    )


def test_pack_holds_one_und_and_one_gen_sample_with_bagels_layout():
    pk = _pack()
    # und: <vs> 6 vit <ve> | <bos> q q <eos> | <bos> a a a <eos> ; gen: <bos> p <eos> | <vs> 2 latents <ve>
    assert pk.sample_lens == [8 + 4 + 5, 3 + 4]
    assert pk.split_lens == [[8, 4, 5], [3, 4]]
    assert pk.attn_modes == [["full", "causal", "causal"], ["causal", "noise"]]
    assert pk.vit_token_indexes == list(range(1, 7))
    assert pk.vit_position_ids == [0, 1, 2, 8, 9, 10]  # 2 x 3 patches on an 8-wide grid
    assert pk.vae_token_indexes == [21, 22] and pk.mse_loss_indexes == [21, 22]
    assert pk.latent_position_ids == [0, 8] and pk.latent_shape == (2, 1)
    assert pk.timesteps == [0.25, 0.25]
    # every position is exactly one of: text, vit, vae
    every = sorted(pk.text_indexes + pk.vit_token_indexes + pk.vae_token_indexes)
    assert every == list(range(pk.length))
    text_at = dict(zip(pk.text_indexes, pk.text_ids))
    assert [text_at[i] for i in (0, 7, 8, 11, 12, 16, 17, 20, 23)] == [3, 4, 1, 2, 1, 2, 1, 3, 4]
    # CE on <bos> a a a (predicting a a a <eos>) only; nothing on the question or the prompt
    assert pk.ce_loss_indexes == [12, 13, 14, 15]
    assert [text_at[i] for i in pk.ce_loss_indexes] == [1, 20, 21, 22]
    assert pk.label_ids == [20, 21, 22, 2]
    # RoPE: an image is one position; text counts on; each sample starts at 0
    assert pk.position_ids == [0] * 8 + [1, 2, 3, 4] + [5, 6, 7, 8, 9] + [0, 1, 2] + [3] * 4


def test_dropped_prompt_leaves_the_noise_image_alone():
    pk = _pack(drop=True)
    assert pk.prompt_dropped and pk.split_lens[1] == [4] and pk.attn_modes[1] == ["noise"]
    assert pk.position_ids[-4:] == [0] * 4 and pk.vae_token_indexes == [18, 19]


def test_attention_mask_modes_by_hand():
    m = attention_mask([2, 2, 1], ["full", "noise", "causal"]) == 0
    allowed = torch.tensor(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0],  # noise split: itself (full) and what precedes it
            [1, 1, 1, 1, 0],
            [1, 1, 0, 0, 1],  # later tokens do not see the noise split
        ],
        dtype=torch.bool,
    )
    assert torch.equal(m, allowed)
    c = attention_mask([3], ["causal"]) == 0
    assert torch.equal(c, torch.ones(3, 3, dtype=torch.bool).tril())


def test_patchify_and_timestep_shift_by_hand():
    img = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    p = patchify(img, 2)
    assert p.shape == (4, 8)
    # patch (0, 1): rows 0-1, cols 2-3, channel-last within a pixel
    assert p[1].tolist() == [2, 18, 3, 19, 6, 22, 7, 23]
    t = shifted_timestep(torch.tensor([0.0, math.log(3.0)]), 3.0)  # sigmoid: 0.5, 0.75
    assert torch.allclose(t, torch.tensor([0.75, 2.25 / 2.5]))


# -- training --------------------------------------------------------------------------------------


def test_sft_loss_falls_and_reports_ce_and_mse(tiny):
    a = load_adapter("bagel", spec(tiny / "model"))
    pol = Policy(a, RECIPE)
    first = pol.sft_step(examples(tiny), seed=0)
    for _ in range(7):
        last = pol.sft_step(examples(tiny), seed=0)
    assert set(first) >= {"ce/sft_loss", "mse/sft_loss", "loss", "grad_norm"}
    assert first["loss"] == pytest.approx(first["ce/sft_loss"] + first["mse/sft_loss"], rel=1e-5)
    assert last["ce/sft_loss"] < 0.8 * first["ce/sft_loss"]
    assert last["mse/sft_loss"] < 0.9 * first["mse/sft_loss"]


def test_loss_weights_and_one_to_one_pairs(tiny):
    a = load_adapter("bagel", spec(tiny / "model", options={"ce_weight": 0.5, "mse_weight": 2.0}))
    losses = a.sft_loss(examples(tiny), seed=3)
    assert float(a.combine_sft_losses(losses).detach()) == pytest.approx(
        0.5 * float(losses["ce"]) + 2 * float(losses["mse"]), rel=1e-6
    )
    with pytest.raises(BadRequest, match="1 und and 0 gen"):
        a.sft_loss(examples(tiny)[:1])
    with pytest.raises(BadRequest, match="cannot read image"):
        a.sft_loss([SFTExample("und", str(tiny / "nope.png"), "q", "A"), examples(tiny)[1]])


def test_freeze_und_trains_only_the_generation_expert(tiny):
    a = load_adapter("bagel", spec(tiny / "model", train_modules=["gen_expert"]))
    names = [n for n, _ in a.trainable_parameters()]
    assert names and all(
        "_moe_gen" in n or n.startswith(("model.vae2llm", "model.llm2vae", "model.time_embedder")) for n in names
    )
    und_before = {n: p.detach().clone() for n, p in a.model.named_parameters() if n not in names}
    Policy(a, RECIPE).sft_step(examples(tiny), seed=0)
    assert all(torch.equal(p, und_before[n]) for n, p in a.model.named_parameters() if n in und_before)
    vit_only = load_adapter("bagel", spec(tiny / "model", train_modules=["vit"]))
    assert all(n.startswith(("model.vit_model.", "model.connector.")) for n, _ in vit_only.trainable_parameters())


# -- checkpoints -----------------------------------------------------------------------------------


def test_missing_files_are_named(tiny, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny / "model", broken)
    os.remove(broken / "ae.safetensors")
    os.remove(broken / "vit_config.json")
    with pytest.raises(CheckpointNotFound, match="lacks vit_config.json, ae.safetensors") as e:
        load_adapter("bagel", spec(broken))
    assert e.value.detail["missing"] == ["vit_config.json", "ae.safetensors"]
    with pytest.raises(CheckpointNotFound, match="does not exist"):
        load_adapter("bagel", spec(tmp_path / "absent"))


def test_save_round_trip_with_upstream_key_names(tiny, tmp_path):
    from safetensors.torch import load_file

    a = load_adapter("bagel", spec(tiny / "model", options={"ema_decay": 0.5}))
    Policy(a, RECIPE).sft_step(examples(tiny), seed=1)
    out = tmp_path / "ft"
    a.save_pretrained(str(out))
    for f in ("llm_config.json", "vit_config.json", "ae.safetensors", "ema.safetensors", "model.safetensors"):
        assert (out / f).is_file(), f
    ema, live = load_file(out / "ema.safetensors"), load_file(out / "model.safetensors")
    upstream = load_file(tiny / "model" / "ema.safetensors")
    assert set(ema) == set(upstream) == set(live)  # BAGEL's names: language_model.*, vit_model.*, ...
    assert "language_model.model.layers.0.mlp_moe_gen.up_proj.weight" in ema and not any(
        k.startswith("model.") for k in ema
    )
    k = "language_model.model.layers.0.mlp_moe_gen.up_proj.weight"
    # EMA(0.5) after one step sits halfway between the start and the live weights
    assert torch.allclose(ema[k], 0.5 * upstream[k] + 0.5 * live[k], atol=1e-6)
    b = load_adapter("bagel", spec(out, options={"ema_decay": 0.5}))
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[n], sb[n]) for n in sa)
    assert all(torch.equal(a.ema[n], b.ema[n]) for n in a.ema)
    # Bagel's own loader reads ema.safetensors: an upstream-layout copy without model.safetensors loads the EMA
    os.remove(out / "model.safetensors")
    c = load_adapter("bagel", spec(out))
    assert torch.equal(c.model.state_dict()["model." + k], ema[k])


@pytest.mark.parametrize(
    "how",
    [{"options": {"ema_decay": 0.9}}, {"options": {"lora_rank": 4, "lora_alpha": 8}, "train_modules": ["gen_expert"]}],
    ids=["ema", "lora"],
)
def test_resume_equals_an_uninterrupted_run(tiny, tmp_path, how):
    # EMA weights and LoRA factors live outside the model module: the DCP checkpoint carries them
    # (adapter.extra_state) and the LoRA factors' AdamW state by parameter name
    def run(steps, start=0, policy=None):
        if policy is None:
            torch.manual_seed(0)  # LoRA's A factors start random: the same start for both runs
        pol = policy or load_policy("bagel", spec(tiny / "model", **how), RECIPE)
        for s in range(start, start + steps):
            pol.sft_step(examples(tiny), seed=1000 + s)
        return pol

    straight = run(4)
    half = run(2)
    save_policy(half, "bagel", str(tmp_path / "ck"))
    resumed = run(2, start=2, policy=load_policy("bagel", spec(tiny / "model", **how), RECIPE, str(tmp_path / "ck")))
    assert resumed.step_count == 4
    sa, sb = straight.adapter.model.state_dict(), resumed.adapter.model.state_dict()
    assert all(torch.equal(sa[n], sb[n]) for n in sa)
    xa, xb = straight.adapter.extra_state(), resumed.adapter.extra_state()
    assert xa and set(xa) == set(xb)
    assert all(torch.equal(xa[n], xb[n]) for n in xa)
    if "lora_rank" in how["options"]:  # B starts at 0: trained factors are not
        assert all(float(v.detach().abs().max()) > 0 for n, v in xa.items() if n.endswith(".b"))


def test_option_scoring_prefers_the_trained_answer(tiny):
    a = load_adapter("bagel", spec(tiny / "model"))
    pol = Policy(a, RECIPE)
    q = "Color? A. red B. blue"
    for s in range(12):
        pol.sft_step(examples(tiny), seed=s)
    red, blue = (
        a.option_logprobs(str(tiny / "im0.png"), q, ["A", "B"]),
        a.option_logprobs(str(tiny / "im1.png"), q, ["A", "B"]),
    )
    assert red[0] > red[1] and blue[1] > blue[0]


def test_option_eval_renders_questions_as_the_trainer_does():
    from pairuni_sidecar.ops.option_eval import render_question

    # src/grpo/rewards.ts renderQuestion: "{letter}. {choice}" lines joined by newlines
    assert (
        render_question("Which?", ["red", "blue", "green"], "{question}\n{choices}\nLetter:")
        == "Which?\nA. red\nB. blue\nC. green\nLetter:"
    )


def test_lora_trains_factors_only_and_saves_merged_weights_with_upstream_names(tiny, tmp_path):
    from safetensors.torch import load_file

    lora = {"lora_rank": 4, "lora_alpha": 8}
    a = load_adapter("bagel", spec(tiny / "model", train_modules=["gen_expert"], options=lora))
    names = [n for n, _ in a.trainable_parameters()]
    # 7 projections x 2 layers of the gen expert, two factors each, plus the flow bridges (full)
    assert len(a.lora) == 14 and all("_moe_gen" in n for n in a.lora)
    assert sum(n.startswith("lora:") for n in names) == 28
    base = {n: p.detach().clone() for n, p in a.model.named_parameters()}
    pol = Policy(a, RECIPE)
    first = pol.sft_step(examples(tiny), seed=0)
    for s in range(6):
        last = pol.sft_step(examples(tiny), seed=0)
    assert last["mse/sft_loss"] < first["mse/sft_loss"]
    assert all(torch.equal(p, base[n]) for n, p in a.model.named_parameters() if n.startswith("model.language_model."))
    out = tmp_path / "lora-ck"
    a.save_pretrained(str(out))
    ema, live, factors = (load_file(out / f) for f in ("ema.safetensors", "model.safetensors", "lora.safetensors"))
    k = "language_model.model.layers.1.mlp_moe_gen.down_proj"
    A, B = a.lora["model." + k]
    assert torch.allclose(ema[k + ".weight"], live[k + ".weight"] + 2.0 * (B.detach() @ A.detach()), atol=1e-6)
    assert torch.equal(factors["model." + k + ".lora_a"], A.detach())
    # the merged directory is what Bagel's loader reads: without LoRA it loads W + (alpha/r) B A ...
    merged = load_adapter("bagel", spec(out, train_modules=["gen_expert"]))
    with torch.no_grad():
        torch.manual_seed(9)  # the flow noise comes from the process RNG
        l1 = a.sft_loss(examples(tiny), seed=9)
        torch.manual_seed(9)
        l2 = merged.sft_loss(examples(tiny), seed=9)
    assert float(l1["mse"]) == pytest.approx(float(l2["mse"]), rel=1e-4)
    assert float(l1["ce"]) == pytest.approx(float(l2["ce"]), rel=1e-4)
    # ... and with LoRA it resumes base + factors exactly
    again = load_adapter("bagel", spec(out, train_modules=["gen_expert"], options=lora))
    assert all(
        torch.equal(again.lora[n][0], A_) and torch.equal(again.lora[n][1], B_) for n, (A_, B_) in a.lora.items()
    )
    with pytest.raises(Exception, match="ema_decay needs full weights"):
        load_adapter("bagel", spec(tiny / "model", options={**lora, "ema_decay": 0.9}))
