"""The model-agnostic policy-adapter interface.

One adapter file per model family (``janus.py`` now; Lumina-DiMOO and Bagel later) implements
``PolicyAdapter``. Everything model-specific lives behind it; the PairGRPO loss, the optimizer step
and checkpointing (``pairuni_sidecar.policy``) only ever see:

- ``RolloutBatch``: K trajectories per item for one side (``und`` or ``gen``), with the sampled
  output tokens ``out_ids (B, L)``, the scored positions ``out_mask (B, L)`` and the behaviour
  policy's per-token log-probs ``old_logp (B, L)``;
- ``token_logprobs(batch, rows, est_seed=..., grad=...)``: per-token log-probs of those same tokens
  under the current (or reference) weights, aligned with ``out_ids``.

Per-token (not per-sequence) log-probs keep masked-diffusion estimators possible (d1 / dLLM: one
masked forward whose mask is drawn from ``est_seed``, so old, current and reference log-probs use
the same mask). Autoregressive adapters ignore ``est_seed``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from ..contract.generated import GenSampling, LoadModel, UndSampling
from ..errors import BadRequest, NotFound

Side = Literal["und", "gen"]

#: Capability names an adapter may declare.
CAPABILITIES = frozenset(
    {
        "und_rollout",  # sample K text answers per (image, question)
        "gen_rollout",  # sample K images per prompt
        "logprobs_und",  # per-token log-probs of text answers
        "logprobs_gen",  # per-token log-probs of image tokens
        "sft",  # supervised loss on (image, question, answer) / (prompt, image)
        "cfg",  # classifier-free guidance in gen rollouts and log-probs
        "ref_model",  # can hold a frozen reference copy for the KL term
    }
)


class CheckpointNotFound(NotFound):
    """A model directory (or one of its required files) does not exist."""


class AdapterConfigError(BadRequest):
    """A load spec or sampling setting that the adapter cannot use; the message names the field."""


class EstimatorSeedError(BadRequest):
    """An update asked for log-probs under an estimator seed whose behaviour log-probs were not recorded."""


class CapabilityError(BadRequest):
    """The adapter was asked for something it does not declare in ``capabilities``."""


class ImageReadError(BadRequest):
    """An understanding image or SFT target image that is missing or cannot be decoded."""


class UnhonouredField(BadRequest):
    """A generic request field set to a value the family's adapter does not act on (``honours``):
    refused by name rather than silently dropped. ``detail``: field, family, value."""


@dataclass(kw_only=True)
class LoadSpec(LoadModel):
    """The config's model record (generated from src/contract/config.ts, with its defaults) plus the
    frozen reference copy to load (only when beta > 0). ``options`` are the family's load options."""

    ref_model_dir: str | None = None

    @property
    def model_dir(self) -> str:
        return self.path


@dataclass
class UndItem:
    """One understanding prompt: an image file and the user text (question, choices, format rule)."""

    image_path: str
    text: str


@dataclass
class GenItem:
    """One generation prompt."""

    prompt: str


#: Sampling settings of one rollout: the config's und/gen records (generated, with their defaults)
#: plus the step's seed. ``options`` holds family options, which each adapter validates.
SamplingCfg = UndSampling | GenSampling


def _generic_fields(record: type) -> dict[str, Any]:
    # ``options`` are the family's own (validated against its declaration) and ``seed`` only seeds.
    out = {}
    for f in dataclasses.fields(record):
        if f.name not in ("options", "seed"):
            out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


#: The generic ``sampling`` fields of train.und_rollout / train.gen_rollout (src/contract/ops.ts) by side,
#: with their declared defaults. An adapter acts on those it lists in ``PolicyAdapter.honours``; any other
#: must stay at its default. A field added to the contract is thus refused until a family claims it.
GENERIC_FIELDS: dict[str, dict[str, Any]] = {"und": _generic_fields(UndSampling), "gen": _generic_fields(GenSampling)}

#: ``honours`` value: every value of the field is acted on.
ANY_VALUE = None


@dataclass
class RolloutBatch:
    """K trajectories for each of I items of one side, item-major: rows ``i*K .. i*K+K-1`` are item i.

    ``extra`` is adapter-private (prompt ids, cached image features, sampling settings); the policy
    code never reads it.
    """

    side: Side
    group: torch.Tensor  # (B,) int64: item index of each trajectory
    out_ids: torch.Tensor  # (B, L) int64: sampled tokens (text ids or image codes)
    out_mask: torch.Tensor  # (B, L) bool: positions that count in the loss
    old_logp: torch.Tensor  # (B, L) float32: behaviour-policy log-probs of out_ids
    prompts: list[str]  # (I,) the raw prompt / question text per item (rewards use it)
    texts: list[str] | None = None  # und: decoded answers (B,)
    images: torch.Tensor | None = None  # gen: uint8 (B, H, W, 3)
    ref_logp: torch.Tensor | None = None  # (B, L) float32 once computed for the KL term
    extra: dict[str, Any] = field(default_factory=dict)
    #: behaviour log-probs per estimator seed, for adapters whose log-probs are a seeded estimate
    #: (``seeded_logprobs``); recorded at rollout time for every seed in the sampling's ``est_seeds``
    old_logp_by_seed: dict[int, torch.Tensor] = field(default_factory=dict)
    #: reference log-probs per estimator seed (seeded estimators; ``ref_logp`` otherwise)
    ref_logp_by_seed: dict[int, torch.Tensor] = field(default_factory=dict)

    def old_logp_for(self, est_seed: int) -> torch.Tensor:
        """The behaviour log-probs to divide by in an update that scores with ``est_seed``."""
        if not self.old_logp_by_seed:
            return self.old_logp
        if int(est_seed) not in self.old_logp_by_seed:
            raise EstimatorSeedError(
                f"this {self.side} rollout recorded behaviour log-probs for estimator seeds "
                f"{sorted(self.old_logp_by_seed)} only, not {est_seed}: send the update's est_seed among the "
                "rollout's sampling.est_seeds (the trainer sends one per inner iteration)",
                detail={"est_seed": int(est_seed), "recorded": sorted(self.old_logp_by_seed)},
            )
        return self.old_logp_by_seed[int(est_seed)]

    @property
    def size(self) -> int:
        return int(self.out_ids.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.out_mask.sum())


@dataclass
class SFTExample:
    """One supervised example: ``side='und'`` uses (image_path, text, target); ``'gen'`` uses (prompt, image_path)."""

    side: Side
    image_path: str
    text: str = ""
    target: str = ""


class PolicyAdapter(ABC):
    """A trainable unified VLM behind a family-independent surface."""

    #: "ar" (autoregressive), "mdm" (masked diffusion), "ar+flow" (AR text + flow-matching images)
    family: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]
    #: True when ``token_logprobs`` is a seeded estimate (masked diffusion): old and reference log-probs
    #: are then kept per ``est_seed``; False (exact log-probs) ignores the seed.
    seeded_logprobs: ClassVar[bool] = False
    #: The registered adapter name (``model.adapter``), for messages that name the family.
    name: ClassVar[str]
    #: The generic fields (``GENERIC_FIELDS``, as ``"side.field"``) this adapter acts on: ``ANY_VALUE``,
    #: or the tuple of values it implements. A field not listed is refused unless at its default.
    honours: ClassVar[dict[str, tuple | None]] = {}

    device: torch.device
    #: The autocast dtype of forwards (``resolve_autocast``); None = full precision.
    amp: torch.dtype | None = None

    @abstractmethod
    def __init__(self, spec: LoadSpec) -> None: ...

    def _autocast(self):
        """The adapter's autocast context for a forward (a no-op without ``amp``)."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    # -- rollouts --------------------------------------------------------------------------------
    @abstractmethod
    def und_rollout(self, items: list[UndItem], n: int, s: SamplingCfg) -> RolloutBatch:
        """Sample ``n`` answers per item (no grad); record old log-probs per ``s.old_logp``."""

    @abstractmethod
    def gen_rollout(self, items: list[GenItem], n: int, s: SamplingCfg) -> RolloutBatch:
        """Sample ``n`` images per prompt (no grad), decoded into ``images``."""

    # -- scoring ---------------------------------------------------------------------------------
    @abstractmethod
    def token_logprobs(
        self, batch: RolloutBatch, rows: torch.Tensor, *, est_seed: int, grad: bool, ref: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs of ``batch.out_ids[rows]`` under the policy (or the reference model).

        Returns ``(logp (b, L) float32, mask (b, L) bool)`` aligned with ``out_ids``; with
        ``grad=True`` ``logp`` carries the autograd graph to the trainable parameters.
        """

    @abstractmethod
    def sft_loss(self, examples: list[SFTExample]) -> dict[str, torch.Tensor]:
        """The supervised loss terms (with grad), e.g. mean token cross-entropy per side present
        ``{"und": ..., "gen": ...}``; Bagel: ``{"ce": ..., "mse": ...}``."""

    def combine_sft_losses(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scalar that ``sft_step`` back-propagates (a family with loss weights overrides this)."""
        return sum(losses.values())

    def after_step(self) -> None:
        """Called after every applied optimizer step (e.g. an EMA of the weights)."""

    # -- held-out evaluation (deterministic answers, seeded images) -------------------------------
    def greedy_answers(self, images: torch.Tensor, texts: list[str], *, max_new_tokens: int = 16) -> list[str]:
        """Deterministic answers (decoded text, special tokens dropped) for uint8 images (B, H, W, 3) and
        user texts (what ``UndItem.text`` holds): greedy decoding for autoregressive families, the
        family's deterministic decoding otherwise. No grad; weights unchanged."""
        raise CapabilityError(f"{type(self).__name__} (family {self.family!r}) does not implement greedy_answers")

    def sample_images(
        self, prompts: list[str], n: int, *, cfg_weight: float, temperature: float, seed: int
    ) -> torch.Tensor:
        """``n`` images per prompt, prompt-major, uint8 (P * n, H, W, 3), sampled as ``gen_rollout`` samples
        (guidance ``cfg_weight``, 1.0 = none; ``temperature``) and reproducible from ``seed``. No grad."""
        raise CapabilityError(f"{type(self).__name__} (family {self.family!r}) does not implement sample_images")

    # -- parameters and persistence --------------------------------------------------------------
    @abstractmethod
    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """(name, parameter) pairs that the optimizer updates (fp32 master weights)."""

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Trained state that lives outside ``self.model`` (e.g. an EMA of the weights, LoRA factors),
        by name: checkpoints save it and restore it in place (the tensors returned must be the live ones)."""
        return {}

    @abstractmethod
    def save_pretrained(self, path: str, state_dict: dict | None = None, extra_state: dict | None = None) -> None:
        """Write the current weights (+ tokenizer/config files) so that the adapter loads ``path``;
        ``state_dict`` / ``extra_state``: the full weights and ``extra_state()`` tensors gathered from the
        ranks' shards (FSDP2; rank 0 writes), else the adapter's own."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Small JSON-able facts (family, capabilities, sizes, special ids) for the controller."""

    def train_mode(self, on: bool) -> None:
        """Switch between rollout (eval) and update (train: gradient checkpointing active) modes."""

    def shard(self) -> None:
        """Shard the policy over the world with FSDP2 (``dist.shard``), wrapping every submodule the
        adapter calls directly. Called once, before the optimizer is built, only when world > 1."""
        raise CapabilityError(
            f"{type(self).__name__} (family {self.family!r}) does not implement shard(): "
            "it cannot train with more than one rank"
        )

    def gathered(self):
        """A context manager giving full weights to rollouts and evaluation (FSDP2 ``unshard``)."""
        from ..dist import gathered

        return gathered(getattr(self, "model", None))

    @classmethod
    def check_honoured(cls, side: Side, s: SamplingCfg) -> None:
        """Refuse (``UnhonouredField``) a generic sampling field this adapter would silently ignore."""
        for field_name, default in GENERIC_FIELDS[side].items():
            value, key = getattr(s, field_name), f"{side}.{field_name}"
            takes = cls.honours[key] if key in cls.honours else (default,)
            if takes is ANY_VALUE or value in takes:
                continue
            config = re.sub(r"_(\w)", lambda m: m.group(1).upper(), key)
            raise UnhonouredField(
                f"the {cls.name} adapter does not honour {key}={value!r} (train.{side}_rollout "
                f"sampling.{field_name}; config {config}): it takes {' or '.join(map(repr, takes))}",
                detail={"field": f"sampling.{field_name}", "family": cls.name, "value": value},
            )

    def require(self, capability: str) -> None:
        if capability not in self.capabilities:
            raise CapabilityError(
                f"{type(self).__name__} (family {self.family!r}) does not support {capability!r}; "
                f"it declares {sorted(self.capabilities)}"
            )


def disable_dropout(model: torch.nn.Module) -> None:
    """RL log-prob passes must be deterministic (ratio == 1 at the first inner iteration), train mode
    included: zero every ``nn.Dropout`` and the float rates that attention code passes to functional
    dropout itself (HF's ``attention_dropout``, a module's ``dropout``), which no ``nn.Dropout`` covers."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        for attr in ("attention_dropout", "dropout"):
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, 0.0)


def store_frozen(model: torch.nn.Module, dtype: torch.dtype | None) -> None:
    """Frozen parameters need no fp32 master copy: under bf16 compute (``dtype``) they are stored in it
    (half the bytes; they get no gradient and no optimizer state). fp32 (``None``, the CPU default)
    leaves them as they are."""
    if dtype is None:
        return
    for p in model.parameters():
        if not p.requires_grad:
            p.data = p.data.to(dtype)


def checkpoint_blocks(blocks: list[torch.nn.Module]) -> None:
    """Activation checkpointing per transformer block: a block's forward with grad enabled keeps only
    its inputs and runs again in the backward pass. The module tree (and so every parameter name, the
    checkpoints' keys) is unchanged, and FSDP2 wrapped around a block still gathers its shard for the
    recomputation (its pre-backward hook runs first). No-grad passes (rollouts) are untouched."""
    from torch.utils.checkpoint import checkpoint

    for b in blocks:
        if getattr(b, "_pairuni_checkpointed", False):
            continue
        inner = b.forward

        def forward(*args, _inner=inner, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
            return _inner(*args, **kwargs)

        b.forward = forward
        b._pairuni_checkpointed = True


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        from ..dist import default_device

        return default_device()  # chosen once per process, from the local rank
    try:
        d = torch.device(device)
    except RuntimeError as e:
        raise AdapterConfigError(f"device {device!r} is not a torch device: {e}") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise AdapterConfigError(f"device {device!r} requested but CUDA is not available in this sidecar")
    return d


def resolve_autocast(autocast: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for forwards: fp32 master weights always; bf16 compute on CUDA by default."""
    if autocast == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if autocast == "bf16":
        return torch.bfloat16
    if autocast in ("off", "fp32"):
        return None
    raise AdapterConfigError(f"autocast must be 'auto', 'bf16' or 'off', got {autocast!r}")
