"""Per-rank memory of one training configuration, component by component, and what to change when it
does not fit.

The memory discipline planned (issue 26, part 2; ``precision="bf16-mixed"``, the GPU one):

- trainable parameters are fp32 master weights, sharded by FSDP2 (dim 0 split in ``ranks`` chunks of
  ``ceil(rows / ranks)``, the last ones shorter or empty); compute runs on bf16 copies gathered one
  FSDP unit at a time (``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``);
- frozen parameters are stored in bf16, sharded the same way, and get no gradient;
- gradients: fp32, the shape of the local shard (reduce-scattered), trainable parameters only;
- AdamW: ``exp_avg`` and ``exp_avg_sq`` in fp32 per trainable shard, plus its 4-byte ``step`` tensor;
- the reference model (only when beta > 0): a bf16 copy of the base weights sharded like the policy
  (with LoRA the frozen base *is* the reference, adapters off: no copy);
- FSDP2 CPU offload moves parameter, gradient and optimizer shards (policy and reference) to host
  memory; the gathered units still live on the GPU.

``precision="fp32"`` is the CPU discipline the tests and the bench run (everything fp32, frozen too).

A step's peak is the larger of its two phases:

- update: persistent state + gradients + activations of one micro-batch + FSDP's gathered units;
- rollout: persistent state + the full weights gathered for sampling (``dist.gathered``; world > 1) +
  the rollout buffers (Janus KV cache, DiMOO sampler state).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace

from ..contract.generated import PlanRequest
from ..errors import BadRequest
from . import arch as archmod
from .presets import preset as get_preset

GiB = 1 << 30
#: Kept free on every GPU: the CUDA context, NCCL buffers and allocator fragmentation (about 10% of an
#: 80 GB card in practice); a plan that needs more than the rest does not fit
RESERVE = 0.10
#: the LoRA rank the "add LoRA" suggestion uses
SUGGESTED_LORA_RANK = 64
FAMILIES = ("janus", "dimoo", "bagel")


class PlanError(BadRequest):
    """A plan request that cannot be planned: an unknown preset, a family/preset mismatch, a nonsense
    number. ``detail.field`` names the field at fault."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message, detail={"field": field} if field else None)


#: The request (``family``, ``preset`` | ``model_dir``, ``ranks``, ``gpu_gib``, ``train_modules``,
#: ``lora_rank``, ``beta``, ``micro_batch``, ``k``, ``text_tokens``, ``image_tokens``, ``checkpointing``,
#: ``cpu_offload``, ``precision``, ``mode``) is generated from its one declaration, ``PlanArgs`` in
#: src/contract/ops.ts, with its defaults.


# -- input checks ------------------------------------------------------------------------------------


def _check(r: PlanRequest) -> None:
    if r.family not in FAMILIES:
        raise PlanError(f"family must be one of {', '.join(FAMILIES)}, got {r.family!r}", field="family")
    if (r.preset is None) == (r.model_dir is None):
        raise PlanError("give exactly one of preset and model_dir", field="preset")
    ints = {
        "ranks": (r.ranks, 1),
        "lora_rank": (r.lora_rank, 0),
        "micro_batch": (r.micro_batch, 1),
        "k": (r.k, 1),
        "text_tokens": (r.text_tokens, 1),
    }
    if r.image_tokens is not None:
        ints["image_tokens"] = (r.image_tokens, 1)
    for name, (v, lo) in ints.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise PlanError(f"{name} must be an integer >= {lo}, got {v!r}", field=name)
    for name, v in (("gpu_gib", r.gpu_gib), ("beta", r.beta)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise PlanError(f"{name} must be a finite number >= 0, got {v!r}", field=name)
    if r.gpu_gib <= 0:
        raise PlanError(f"gpu_gib must be > 0, got {r.gpu_gib!r}", field="gpu_gib")
    if r.precision not in ("bf16-mixed", "fp32"):
        raise PlanError(f"precision must be bf16-mixed or fp32, got {r.precision!r}", field="precision")
    if r.mode not in (None, "rl", "sft"):
        raise PlanError(f"mode must be rl or sft, got {r.mode!r}", field="mode")
    if r.family == "bagel" and r.mode == "rl":
        raise PlanError("bagel trains by SFT only (mode sft)", field="mode")
    if not r.train_modules:
        raise PlanError("train_modules is empty: nothing would train", field="train_modules")


def _arch(r: PlanRequest) -> archmod.Arch:
    if r.preset is not None:
        p = get_preset(r.preset)
        if p.family != r.family:
            raise PlanError(f"preset {r.preset!r} is a {p.family} model, not {r.family}", field="preset")
        a = archmod.from_preset(p)
        if r.image_tokens:
            a.image_tokens = r.image_tokens
        return a
    return archmod.from_model_dir(r.family, os.path.abspath(r.model_dir), r.image_tokens)


# -- sharding ----------------------------------------------------------------------------------------


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def shard_numel(shape: tuple[int, ...], ranks: int, rank: int = 0) -> int:
    """Elements of FSDP2's local shard on ``rank``: dim 0 is chunked as ``torch.chunk`` does
    (``ceil(rows / ranks)`` rows each, the last ranks shorter or empty); rank 0 holds the most."""
    if ranks == 1 or not shape:
        return numel(shape)
    rows = shape[0]
    chunk = -(-rows // ranks)
    mine = max(0, min(chunk, rows - rank * chunk))
    return mine * numel(shape[1:])


# -- what trains -------------------------------------------------------------------------------------


@dataclass
class Tensors:
    """(name, shape) of the parameters by role, after train-module and LoRA selection. ``replicated``:
    trainable tensors outside FSDP2's units (LoRA factors), whole on every rank with their gradients
    and AdamW state (``Policy`` averages their gradients over the world)."""

    trainable: list[tuple[str, tuple[int, ...]]]
    frozen: list[tuple[str, tuple[int, ...]]]
    replicated: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)


def select(a: archmod.Arch, r: PlanRequest) -> Tensors:
    unknown = [m for m in r.train_modules if m not in a.known_groups]
    if unknown:
        raise PlanError(
            f"train_modules {unknown} are not groups of {a.family} ({', '.join(a.known_groups)})", field="train_modules"
        )
    want = set(r.train_modules)
    on = {n for n, _ in a.params if a.groups[n] & want and n not in a.always_frozen}
    if not on:
        raise PlanError(
            f"train_modules {r.train_modules} select no parameter of this {a.family} model", field="train_modules"
        )
    if r.lora_rank == 0:
        return Tensors([(n, s) for n, s in a.params if n in on], [(n, s) for n, s in a.params if n not in on])
    # LoRA: each targeted linear (out, in) of a trained block gets A (r, in) and B (out, r) in fp32, whole
    # on every rank. The base weights are frozen: every one for Janus and DiMOO; Bagel freezes only its
    # LLM (adapters/bagel.py), so a selected ViT and the flow bridges still train in full.
    llm_only = a.family == "bagel"  # Bagel's factors go on its LLM experts' projections only
    targets = [
        (n, s)
        for n, s in a.params
        if n in on and n in set(a.lora_targets()) and (not llm_only or n.startswith("model.language_model."))
    ]
    if not targets:
        raise PlanError(
            f"lora_rank {r.lora_rank}: train_modules {r.train_modules} contain no linear layer LoRA adapts",
            field="lora_rank",
        )
    lora = []
    for n, (out, inp) in targets:
        base = n.removesuffix(".weight")
        lora += [(base + ".lora_A", (r.lora_rank, inp)), (base + ".lora_B", (out, r.lora_rank))]
    full = {n for n in on if a.family == "bagel" and not n.startswith("model.language_model.")}
    return Tensors([(n, s) for n, s in a.params if n in full], [(n, s) for n, s in a.params if n not in full], lora)


# -- one function per component ----------------------------------------------------------------------


def compute_bytes(r: PlanRequest) -> int:
    return 2 if r.precision == "bf16-mixed" else 4


# The state functions take the rank (default 0, which holds the largest shards: the plan's figure);
# the bench compares every rank's own tensors with its own figure.


def parameter_bytes(t: Tensors, r: PlanRequest, rank: int = 0) -> int:
    """fp32 master shards of the trainable tensors + frozen shards in the compute dtype + the replicated
    fp32 LoRA factors."""
    return (
        sum(4 * shard_numel(s, r.ranks, rank) for _, s in t.trainable)
        + sum(compute_bytes(r) * shard_numel(s, r.ranks, rank) for _, s in t.frozen)
        + sum(4 * numel(s) for _, s in t.replicated)
    )


def gradient_bytes(t: Tensors, r: PlanRequest, rank: int = 0) -> int:
    """fp32, one per trainable shard element (FSDP2 reduce-scatters into the sharded ``.grad``), and the
    replicated factors' whole gradients."""
    return sum(4 * shard_numel(s, r.ranks, rank) for _, s in t.trainable) + sum(4 * numel(s) for _, s in t.replicated)


def optimizer_bytes(t: Tensors, r: PlanRequest, rank: int = 0) -> int:
    """AdamW: exp_avg + exp_avg_sq (fp32, shard-shaped, whole for replicated factors) and one 4-byte
    ``step`` tensor per parameter."""
    return sum(8 * shard_numel(s, r.ranks, rank) + 4 for _, s in t.trainable) + sum(
        8 * numel(s) + 4 for _, s in t.replicated
    )


def state_bytes(r: PlanRequest, rank: int) -> dict[str, int]:
    """Parameter, gradient and optimizer bytes of one given rank (the bench's exact comparison)."""
    _check(r)
    t = select(_arch(r), r)
    return {
        "parameters": parameter_bytes(t, r, rank),
        "gradients": gradient_bytes(t, r, rank),
        "optimizer": optimizer_bytes(t, r, rank),
    }


def reference_bytes(a: archmod.Arch, r: PlanRequest) -> int:
    """beta > 0: the base model again, frozen, in the compute dtype, sharded like the policy. With LoRA
    the policy's frozen base with adapters switched off is the reference: nothing extra."""
    if r.beta <= 0 or r.lora_rank > 0:
        return 0
    return sum(compute_bytes(r) * shard_numel(s, r.ranks) for _, s in a.params)


@dataclass
class Sequence:
    """One micro-batch of one side as the update sees it."""

    side: str
    rows: int
    tokens: int  # per row, through the decoder stack
    out_tokens: int  # per row, scored by a head (log-probs / CE)
    vocab: int  # that head's width


def update_sequences(a: archmod.Arch, r: PlanRequest) -> list[Sequence]:
    """What one micro-batch feeds the stack, per side (the update back-propagates each side's
    micro-batches one at a time, policy/step.py; the peak is the larger side)."""
    mb, txt, img = r.micro_batch, r.text_tokens, a.image_tokens
    if a.family == "janus":
        # und: the image's 576 SigLIP tokens + text, answer scored by the text head; gen: prompt +
        # image codes, cond and uncond rows (the CFG-guided log-prob), scored by the image head
        return [Sequence("und", mb, txt + img, txt, a.text_vocab), Sequence("gen", 2 * mb, txt + img, img, a.gen_vocab)]
    if a.family == "dimoo":
        # masked diffusion: the whole sequence each pass, cond and uncond rows, logits over the vocabulary
        return [Sequence("und", mb, txt + img, txt, a.text_vocab), Sequence("gen", 2 * mb, txt + img, img, a.gen_vocab)]
    # Bagel SFT: one packed pair per row: und (ViT tokens + question + answer) and gen (prompt + latents);
    # `text_tokens` is each sample's text with its framing (BOS/EOS, vision brackets) and `micro_batch` the
    # pairs a rank runs in a step: sft_loss forwards them one at a time but sums their losses before the
    # one backward, so every pair's graph is alive at once. The understanding image is the generated
    # image's size cut to whole ViT patches (512 px: 32 x 32 latents, 36 x 36 SigLIP tokens) — a fixed
    # 512 px ViT count made the tiny bench's planned activations 11x the measured ones.
    return [Sequence("sft", mb, 2 * txt + bagel_vit_tokens(a) + img, txt, a.text_vocab)]


def bagel_vit_tokens(a: archmod.Arch) -> int:
    """SigLIP tokens of the understanding image at the generated image's side (``image_tokens`` latent
    tokens, square), cut to whole ViT patches."""
    side = math.isqrt(a.image_tokens) * a.latent_stride
    return (side // a.vit_patch) ** 2


def block_internal_elems(st: archmod.Stack) -> int:
    """Elements one decoder block keeps for backward per token (bf16/fp32 activations, SDPA with a
    fused kernel so no seq x seq matrix): the block input and the first norm's output (h each), q, k, v
    (h + 2 kv), q and k after RoPE (h + kv), the attention output (h), the residual sum and the second
    norm's output (h each), and the SwiGLU gate, up, silu(gate) and product (4 f): 7 h + 3 kv + 4 f.
    The tiny DiMOO's GELU block keeps the block input and first norm's output, the fused qkv (3 h), the
    attention output, the residual sum and second norm's output, and the MLP's hidden before and after
    GELU (2 f): 8 h + 2 f. (Both checked against autograd's saved tensors of the real modules.)"""
    if st.block == "gelu":
        return 8 * st.hidden + 2 * st.inter
    kv = st.kv_heads * (st.hidden // st.heads)
    return 7 * st.hidden + 3 * kv + 4 * st.inter


def activation_bytes(a: archmod.Arch, r: PlanRequest) -> int:
    """One micro-batch, the larger side. Without checkpointing every block keeps its internals; with it
    only each block's input (h per token) is kept and one block's internals exist at a time (its
    recomputation in backward). Plus the head: logits in the compute dtype, their fp32 log-softmax and
    the logits' gradient, over the scored tokens."""
    c, st = compute_bytes(r), a.stack
    best = 0
    for s in update_sequences(a, r):
        tok = s.rows * s.tokens
        blocks = (
            (st.layers * st.hidden + block_internal_elems(st))
            if r.checkpointing
            else st.layers * block_internal_elems(st)
        )
        head = s.rows * s.out_tokens * s.vocab * (2 * c + 4)
        best = max(best, tok * blocks * c + head)
    return best


def fsdp_buffer_bytes(a: archmod.Arch, t: Tensors, r: PlanRequest) -> int:
    """Sharded (ranks > 1 or offload), what FSDP2 (torch 2.13, ``_fsdp_param_group.py``) holds at once,
    in backward: the unit being computed and the one prefetched, unsharded in the compute dtype, and the
    all-gather result of the prefetch until its copy-out (in forward the previous unit's result is kept
    until the next copy-out: three units there too); the unit's unsharded gradient as autograd writes it
    (compute dtype) and a reduce-scatter input in the reduce dtype (fp32), the previous unit's kept until
    this unit's reduce begins. Counting only two gathered units and one fp32 gradient left the tiny
    Bagel's 2-rank SFT step 17-41% above the plan (RSS sampled through the step: ~3 units over the
    activations in forward, ~5 in backward)."""
    if r.ranks == 1 and not r.cpu_offload:
        return 0
    units: dict[str, int] = {}
    train_units: dict[str, int] = {}
    trainable = {n for n, _ in t.trainable}
    for n, s in a.params:
        u = a.unit_of(n)
        units[u] = units.get(u, 0) + numel(s)
        if n in trainable:
            train_units[u] = train_units.get(u, 0) + numel(s)
    c = compute_bytes(r)
    return c * sum(sorted(units.values(), reverse=True)[:3]) + (c + 4) * max(train_units.values(), default=0)


def rollout_bytes(a: archmod.Arch, r: PlanRequest) -> int:
    """Buffers of one prompt's K rollouts (SFT: none).

    Janus: the KV cache of K images x 2 CFG rows over prompt + 576 image tokens (2 tensors per layer of
    kv_heads x head_dim), the largest cache either side builds.
    DiMOO (diffusion/samplers.py): each step runs the cond and then the uncond K rows over the whole
    sequence; one branch's logits over the vocabulary in the compute dtype exist at a time, then both
    branches' image-position logits in fp32 and their guided mix (3 x K x image x vocab x 4), the image
    codes' slice and its log-softmax (2 x K x image x codes x 4); plus the ids of both branches (int64)
    and one block's forward (no grad)."""
    if _mode(a, r) == "sft":
        return 0
    st, c = a.stack, compute_bytes(r)
    rows, seq = 2 * r.k, r.text_tokens + a.image_tokens
    kv = st.kv_heads * (st.hidden // st.heads)
    if a.family == "janus":
        return 2 * st.layers * kv * seq * rows * c
    k, img, vocab = r.k, a.image_tokens, a.gen_vocab
    return (
        k * seq * vocab * c
        + 3 * k * img * vocab * 4
        + 2 * k * img * a.image_codes * 4
        + rows * seq * 8
        + k * seq * block_internal_elems(st) * c
    )


def gathered_weight_bytes(a: archmod.Arch, r: PlanRequest) -> int:
    """World > 1: a rollout keeps every unit unsharded (``dist.gathered``), in the compute dtype."""
    if _mode(a, r) == "sft" or r.ranks == 1:
        return 0
    return compute_bytes(r) * sum(numel(s) for _, s in a.params)


def _mode(a: archmod.Arch, r: PlanRequest) -> str:
    return r.mode or ("sft" if a.family == "bagel" else "rl")


# -- the plan ----------------------------------------------------------------------------------------


def _evaluate(a: archmod.Arch, r: PlanRequest) -> dict:
    t = select(a, r)
    state = {
        "parameters": parameter_bytes(t, r),
        "gradients": gradient_bytes(t, r),
        "optimizer": optimizer_bytes(t, r),
        "reference": reference_bytes(a, r),
    }
    host = sum(state.values()) if r.cpu_offload else 0
    gpu_state = {k: (0 if r.cpu_offload else v) for k, v in state.items()}
    act, buf, roll, gath = (
        activation_bytes(a, r),
        fsdp_buffer_bytes(a, t, r),
        rollout_bytes(a, r),
        gathered_weight_bytes(a, r),
    )
    persistent = gpu_state["parameters"] + gpu_state["optimizer"] + gpu_state["reference"]
    update_peak = persistent + gpu_state["gradients"] + act + buf
    rollout_peak = persistent + gath + roll if _mode(a, r) == "rl" else 0
    total = max(update_peak, rollout_peak)
    usable = int(r.gpu_gib * GiB * (1 - RESERVE))
    return {
        "bytes": {
            **gpu_state,
            "activations": act,
            "fsdp_buffers": buf,
            "gathered_weights": gath,
            "rollout": roll,
            "update_peak": update_peak,
            "rollout_peak": rollout_peak,
            "total": total,
            "host": host,
        },
        "usable": usable,
        "fits": total <= usable,
        "counts": {
            "params": sum(numel(s) for _, s in a.params),
            "trainable": sum(numel(s) for _, s in (*t.trainable, *t.replicated)),
        },
    }


def _candidates(r: PlanRequest) -> list[tuple[str, PlanRequest]]:
    """The listed changes, cheapest first (each alone, then accumulated): activation checkpointing,
    LoRA, more ranks (2x, 4x, 8x), FSDP2 CPU offload."""
    steps: list[tuple[str, dict]] = []
    if not r.checkpointing:
        steps.append(("activation checkpointing on", {"checkpointing": True}))
    if r.lora_rank == 0:
        steps.append((f"LoRA rank {SUGGESTED_LORA_RANK}", {"lora_rank": SUGGESTED_LORA_RANK}))
    steps += [(f"{r.ranks * m} ranks", {"ranks": r.ranks * m}) for m in (2, 4, 8)]
    if not r.cpu_offload:
        steps.append(("CPU offload on", {"cpu_offload": True}))
    out = [(name, replace(r, **ch)) for name, ch in steps]
    acc, names = {}, []
    for name, ch in steps:
        if "ranks" in ch:
            continue
        acc.update(ch)
        names.append(name)
        if len(names) > 1:
            out.append((" + ".join(names), replace(r, **acc)))
    for m in (2, 4, 8):  # everything at once, then with more ranks
        out.append((" + ".join([*names, f"{r.ranks * m} ranks"]), replace(r, **acc, ranks=r.ranks * m)))
    return out


def plan(r: PlanRequest) -> dict:
    """The per-rank plan of ``r`` (bytes by component, the total, whether it fits) and, when it does
    not, the first listed change that makes it fit, or the verdict that none does."""
    _check(r)
    a = _arch(r)
    out = _evaluate(a, r)
    suggestion = None
    if not out["fits"]:
        for name, alt in _candidates(r):
            try:
                e = _evaluate(a, alt)
            except PlanError:
                continue  # e.g. LoRA where the trained modules have no linear layer
            if e["fits"]:
                suggestion = {"change": name, "total": e["bytes"]["total"], "request": asdict(alt)}
                break
    return {
        "family": a.family,
        "preset": r.preset,
        "model_dir": r.model_dir,
        "mode": _mode(a, r),
        "request": asdict(r),
        "image_tokens": a.image_tokens,
        **out,
        "suggestion": suggestion,
        "verdict": "fits"
        if out["fits"]
        else (f"fits with: {suggestion['change']}" if suggestion else "nothing listed fits"),
    }
