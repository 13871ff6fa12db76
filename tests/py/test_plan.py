"""`pairuni plan`: bytes against a real model's tensors, FSDP2's dim-0 sharding, the presets against
their published sizes, the fit verdicts and the typed errors."""

from __future__ import annotations

import math

import pytest
import torch

from pairuni_sidecar.adapters.tiny import tiny_janus_config
from pairuni_sidecar.plan import arch
from pairuni_sidecar.plan.memory import GiB, PlanError, PlanRequest, plan, shard_numel
from pairuni_sidecar.plan.presets import PRESETS
from pairuni_sidecar.registry import OpContext, run_op


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from pairuni_sidecar.adapters.tiny import build_tiny_janus

    return build_tiny_janus(str(tmp_path_factory.mktemp("plan") / "janus"))


@pytest.fixture(scope="module")
def real_tiny():
    from transformers import JanusForConditionalGeneration

    torch.manual_seed(0)
    return JanusForConditionalGeneration(tiny_janus_config())


def test_tiny_janus_bytes_equal_the_real_models_tensors(tiny_dir, real_tiny):
    names = dict(real_tiny.named_parameters())
    every = ["language_model", "vision", "gen_head", "gen_embed", "vqmodel"]
    # fp32 (the CPU discipline): every parameter 4 bytes; grads and AdamW's two moments per trainable
    # element, plus AdamW's 4-byte step tensor per trainable parameter
    p = plan(PlanRequest(family="janus", model_dir=tiny_dir, precision="fp32", train_modules=every))
    assert p["counts"]["params"] == sum(t.numel() for t in names.values())
    assert p["bytes"]["parameters"] == sum(t.numel() * t.element_size() for t in names.values())
    assert p["bytes"]["gradients"] == p["bytes"]["parameters"]
    assert p["bytes"]["optimizer"] == 2 * p["bytes"]["parameters"] + 4 * len(names)
    # bf16-mixed, language model only: its tensors fp32 masters, everything else bf16 and without grads
    q = plan(PlanRequest(family="janus", model_dir=tiny_dir))
    lm = {n: t for n, t in names.items() if n.startswith(("model.language_model.", "lm_head."))}
    want = sum(t.numel() * (4 if n in lm else 2) for n, t in names.items())
    assert q["bytes"]["parameters"] == want
    assert q["bytes"]["gradients"] == sum(t.numel() * 4 for t in lm.values())
    assert q["counts"]["trainable"] == sum(t.numel() for t in lm.values())


def test_two_ranks_halve_the_state_up_to_fsdp2_dim0_padding(tiny_dir, real_tiny):
    # FSDP2 shards dim 0 as torch.chunk does: rank 0 holds ceil(rows/2) rows
    for n, t in real_tiny.named_parameters():
        chunks = torch.chunk(t.detach(), 2, dim=0)
        assert [shard_numel(tuple(t.shape), 2, r) for r in (0, 1)] == [c.numel() for c in chunks] + [0] * (
            2 - len(chunks)
        ), n
    one = plan(PlanRequest(family="janus", model_dir=tiny_dir, precision="fp32"))["bytes"]
    two = plan(PlanRequest(family="janus", model_dir=tiny_dir, precision="fp32", ranks=2))["bytes"]
    odd_rows = sum(4 * math.prod(t.shape[1:]) for t in real_tiny.parameters() if t.shape[0] % 2)
    for k in ("parameters", "gradients"):
        assert one[k] / 2 <= two[k] <= one[k] / 2 + odd_rows / 2
    assert two["fsdp_buffers"] > 0 and one["fsdp_buffers"] == 0


@pytest.mark.parametrize(
    "name,tol",
    [
        ("Janus-Pro-1B", 0.01),
        ("Janus-Pro-7B", 0.01),
        ("Lumina-DiMOO", 0.02),
        # "14B" is the paper's rounding; the count holds 32 M fixed sin-cos tables
        ("BAGEL-7B-MoT", 0.05),
    ],
)
def test_presets_match_their_published_sizes(name, tol):
    p = PRESETS[name]
    a = arch.from_preset(p)
    n = sum(math.prod(s) for _, s in a.params)
    assert abs(n - p.published_params) / p.published_params < tol, (name, n)


def test_dimoo_analytic_count_is_llada_8b_plus_the_image_codes():
    c = PRESETS["Lumina-DiMOO"].config
    # hand count: per block 4 d^2 attention + 3 d f SwiGLU + 2 d norms; wte and the untied head; ln_f
    d, f, L, V = 4096, 12288, 32, 134548
    assert sum(math.prod(s) for _, s in arch.dimoo_shapes(c)) == L * (4 * d * d + 3 * d * f + 2 * d) + 2 * V * d + d


def test_paper_settings_verdicts():
    j = plan(PlanRequest(family="janus", preset="Janus-Pro-7B", ranks=8, gpu_gib=80, k=4))
    assert (
        j["fits"]
        and j["suggestion"] is None
        and j["bytes"]["total"] == max(j["bytes"]["update_peak"], j["bytes"]["rollout_peak"])
    )
    # one 80 GB GPU, no checkpointing, a reference: DiMOO-8B full fine-tuning does not fit, and the
    # first listed change that does is named
    d = plan(
        PlanRequest(family="dimoo", preset="Lumina-DiMOO", ranks=1, gpu_gib=80, k=2, beta=0.04, checkpointing=False)
    )
    assert not d["fits"] and d["bytes"]["reference"] > 0
    assert d["suggestion"] is not None and d["verdict"] == f"fits with: {d['suggestion']['change']}"
    assert d["suggestion"]["total"] <= d["usable"]
    tiny_gpu = plan(PlanRequest(family="bagel", preset="BAGEL-7B-MoT", ranks=1, gpu_gib=0.5))
    assert tiny_gpu["verdict"] == "nothing listed fits" and tiny_gpu["suggestion"] is None


def test_lora_trains_only_adapters_and_drops_the_reference_copy():
    full = plan(PlanRequest(family="janus", preset="Janus-Pro-1B", beta=0.04))
    lora = plan(PlanRequest(family="janus", preset="Janus-Pro-1B", beta=0.04, lora_rank=16))
    cfg = PRESETS["Janus-Pro-1B"].config["text_config"]
    h, f, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    # q, k, v, o: r (h + h) each; gate, up: r (h + f); down: r (f + h)
    assert lora["counts"]["trainable"] == L * 16 * (4 * 2 * h + 3 * (h + f))
    assert lora["bytes"]["reference"] == 0 and full["bytes"]["reference"] > 0
    assert lora["bytes"]["optimizer"] < full["bytes"]["optimizer"] / 100


@pytest.mark.parametrize(
    "kw,field",
    [
        (dict(family="janus", preset="Janus-Pro-70B"), "preset"),
        (dict(family="dimoo", preset="Janus-Pro-7B"), "preset"),
        (dict(family="janus"), "preset"),
        (dict(family="flux", preset="Janus-Pro-7B"), "family"),
        (dict(family="janus", preset="Janus-Pro-7B", ranks=0), "ranks"),
        (dict(family="janus", preset="Janus-Pro-7B", gpu_gib=float("nan")), "gpu_gib"),
        (dict(family="janus", preset="Janus-Pro-7B", gpu_gib=-80), "gpu_gib"),
        (dict(family="janus", preset="Janus-Pro-7B", k=2.5), "k"),
        (dict(family="janus", preset="Janus-Pro-7B", train_modules=["unet"]), "train_modules"),
        (dict(family="bagel", preset="BAGEL-7B-MoT", mode="rl"), "mode"),
        (dict(family="janus", model_dir="/nonexistent/model"), "model_dir"),
    ],
)
def test_bad_input_is_a_typed_error_naming_the_field(kw, field):
    with pytest.raises(PlanError) as e:
        plan(PlanRequest(**kw))
    assert e.value.detail["field"] == field and "\n" not in str(e.value)


def test_plan_op_validates_and_replies(tiny_dir):
    ctx = OpContext.__new__(OpContext)
    r = run_op("plan", ctx, {"family": "janus", "model_dir": tiny_dir, "precision": "fp32", "ranks": 2})
    assert r["fits"] and r["bytes"]["total"] < GiB and r["request"]["ranks"] == 2
    with pytest.raises(PlanError, match="unknown preset"):
        run_op("plan", ctx, {"family": "janus", "preset": "nope"})


def test_tiny_dimoo_and_bagel_dirs_count_their_real_models(tmp_path):
    import json

    from safetensors.torch import load_file

    from pairuni_sidecar.adapters.tiny_bagel import build_tiny_bagel
    from pairuni_sidecar.diffusion.tiny_model import TinyMDM, TinyMDMConfig, build_tiny_dimoo

    d = build_tiny_dimoo(str(tmp_path / "dimoo"), seed=0)
    with open(f"{d}/config.json") as f:
        c = json.load(f)
    m = TinyMDM(TinyMDMConfig(**{k: c[k] for k in TinyMDMConfig.__dataclass_fields__ if k in c}))
    m.load_state_dict(load_file(f"{d}/model.safetensors"), strict=True)
    p = plan(PlanRequest(family="dimoo", model_dir=d, precision="fp32"))
    assert p["bytes"]["parameters"] == sum(t.numel() * t.element_size() for t in m.parameters())
    assert p["image_tokens"] == c["grid"][0] * c["grid"][1]
    # LoRA on the tiny DiMOO's block linears (top-level ``blocks.N``): qkv (h -> 3h), out, ff.0 (h -> f), ff.2
    h, f, L = c["d_model"], c["d_ff"], c["n_layers"]
    lora = plan(PlanRequest(family="dimoo", model_dir=d, precision="fp32", lora_rank=4))
    assert lora["counts"]["trainable"] == L * 4 * ((h + 3 * h) + (h + h) + (h + f) + (f + h))

    b = build_tiny_bagel(str(tmp_path / "bagel"), seed=0)
    stored = load_file(f"{b}/ema.safetensors")  # every parameter of the model, as the adapter loads it
    q = plan(PlanRequest(family="bagel", model_dir=b, precision="fp32", train_modules=["language_model", "vit"]))
    assert q["counts"]["params"] == sum(t.numel() for t in stored.values())


def test_lora_factors_are_whole_on_every_rank_and_bagel_keeps_its_vit_training(tmp_path):
    """LoRA factors live outside FSDP2's units (replicated): their bytes, gradients and AdamW state do not
    shrink with more ranks. Bagel freezes only its LLM under LoRA: a selected ViT trains in full, as the
    adapter does (the plan's trainable count equals the real adapter's)."""
    from pairuni_sidecar.adapters import LoadSpec, load_adapter
    from pairuni_sidecar.adapters.tiny_bagel import build_tiny_bagel

    one = plan(PlanRequest(family="janus", preset="Janus-Pro-1B", lora_rank=16, ranks=1))
    two = plan(PlanRequest(family="janus", preset="Janus-Pro-1B", lora_rank=16, ranks=2))
    assert two["bytes"]["gradients"] == one["bytes"]["gradients"] > 0
    assert two["bytes"]["optimizer"] == one["bytes"]["optimizer"]
    b = build_tiny_bagel(str(tmp_path / "bagel"), seed=0)
    mods = ["gen_expert", "vit"]
    q = plan(PlanRequest(family="bagel", model_dir=b, precision="fp32", train_modules=mods, lora_rank=4))
    a = load_adapter(
        "bagel",
        LoadSpec(
            adapter="bagel",
            path=b,
            device="cpu",
            autocast="off",
            train_modules=mods,
            options={"lora_rank": 4, "vae_image_size": 32, "vit_image_size": 28},
        ),
    )
    assert q["counts"]["trainable"] == sum(p.numel() for _, p in a.trainable_parameters())
    assert any(n.startswith("model.vit_model.") for n, _ in a.trainable_parameters())


def _saved_per_token_per_layer(build, forward, tokens: int) -> float:
    """Elements autograd keeps for backward per token per block (parameters excluded): the difference
    between a 4-block and a 2-block model, halved."""

    def saved(layers: int) -> int:
        torch.manual_seed(0)
        m = build(layers)
        params = {p.untyped_storage().data_ptr() for p in m.parameters()}
        seen: dict[int, int] = {}

        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in params:
                seen[st.data_ptr()] = st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            forward(m)
        return sum(seen.values()) // 4

    return (saved(4) - saved(2)) / 2 / tokens


def test_block_activation_formula_matches_autograds_saved_tensors():
    from transformers import JanusForConditionalGeneration

    from pairuni_sidecar.diffusion.tiny_model import TinyMDM, TinyMDMConfig
    from pairuni_sidecar.plan.arch import Stack
    from pairuni_sidecar.plan.memory import block_internal_elems

    rows, T, h, f = 4, 40, 128, 384
    x = torch.randn(rows, T, h, requires_grad=True)

    def janus(layers):
        return JanusForConditionalGeneration(tiny_janus_config(hidden=h, layers=layers)).model.language_model

    got = _saved_per_token_per_layer(
        janus,
        lambda lm: lm(inputs_embeds=x, attention_mask=torch.ones(rows, T, dtype=torch.long), use_cache=False),
        rows * T,
    )
    want = block_internal_elems(Stack(1, h, 2 * h, 4, 4))
    assert 0 <= got - want <= 16, (got, want)  # the rest: per-token scalars (norm statistics, logsumexp per head)

    ids, keep = torch.randint(0, 50, (rows, T)), torch.ones(rows, T, dtype=torch.bool)
    got = _saved_per_token_per_layer(
        lambda layers: TinyMDM(TinyMDMConfig(vocab_size=50, d_model=h, n_layers=layers, d_ff=f, n_heads=4)),
        lambda m: m(ids, keep),
        rows * T,
    )
    want = block_internal_elems(Stack(1, h, f, 4, 4, block="gelu"))
    assert 0 <= got - want <= 16, (got, want)


def test_bagel_sft_activations_count_the_understanding_image_at_the_generated_images_size(tmp_path):
    """A Bagel SFT pair packs the und sample (SigLIP tokens + text) and the gen sample (text + latents):
    its ViT tokens follow the generated image's side (latent tokens x 16 px), cut to 14 px patches —
    1296 at 512 px, 16 at the tiny model's 64 px — not a fixed 512 px count."""
    from pairuni_sidecar.adapters.tiny_bagel import build_tiny_bagel
    from pairuni_sidecar.plan.memory import _arch, bagel_vit_tokens

    real = PlanRequest(family="bagel", preset="BAGEL-7B-MoT")
    assert bagel_vit_tokens(_arch(real)) == 36 * 36  # 32 x 32 latents of 16 px = 512 px
    assert bagel_vit_tokens(_arch(PlanRequest(family="bagel", preset="BAGEL-7B-MoT", image_tokens=256))) == 18 * 18
    b = build_tiny_bagel(str(tmp_path / "bagel"), seed=0)  # hidden 64, 2 layers, SwiGLU 128, GQA 4 / 2 heads of 16
    r = PlanRequest(
        family="bagel",
        model_dir=b,
        precision="fp32",
        micro_batch=2,
        text_tokens=10,
        image_tokens=16,
        checkpointing=False,
        train_modules=["language_model"],
    )
    assert bagel_vit_tokens(_arch(r)) == 16
    tokens = 2 * (2 * 10 + 16 + 16)  # 2 pairs of 52 tokens, every graph alive until the one backward
    per_token = 2 * (7 * 64 + 3 * 32 + 4 * 128)  # two layers of the Llama block's saved tensors
    head = 2 * 10 * 102 * (2 * 4 + 4)  # logits, their log-softmax and gradient over the scored text, vocab 102
    assert plan(r)["bytes"]["activations"] == tokens * per_token * 4 + head
