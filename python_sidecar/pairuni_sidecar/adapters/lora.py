"""LoRA for every family: low-rank factors on named ``nn.Linear`` modules, added by forward hooks.

``y = W x + b + (alpha / r) B A x`` with ``A`` (r, in) ~ N(0, 1/in) and ``B`` (out, r) = 0, so a fresh
adapter computes exactly what the base model computes (the PairGRPO ratio is 1 before the first
update). Hooks rather than wrapper modules keep the module tree, and with it the model's state dict,
its checkpoint key names and FSDP's wrapping, exactly the base model's:

- the factors are trainable parameters outside the model, named ``lora:<module>.a`` / ``.b`` (the
  names the optimizer state is keyed by in a policy checkpoint);
- an adapter returns ``LoRA.state()`` from ``extra_state()``: DCP checkpoints save the live factors
  beside the frozen base (``model.*``) and restore them in place on resume;
- ``LoRA.merged(state_dict)`` folds ``W + (alpha/r) B A`` into a state dict for export, so the family's
  own loader reads a plain model.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch

from .base import AdapterConfigError

#: prefix of the factors' trainable-parameter and ``extra_state`` names
PREFIX = "lora:"


def linear_modules(model: torch.nn.Module, keep: Callable[[str], bool]) -> dict[str, torch.nn.Linear]:
    """The model's ``nn.Linear`` modules whose name ``keep`` accepts, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and keep(n)}


def suffix_match(suffixes: Iterable[str]) -> Callable[[str], bool]:
    """A module-name test: the name is one of ``suffixes`` or ends with ``"." + suffix`` (whole components)."""
    sfx = tuple(suffixes)
    return lambda n: any(n == s or n.endswith("." + s) for s in sfx)


def within_blocks(pattern: str) -> Callable[[str], bool]:
    """A module-name test: the name lies under a numbered block whose container matches ``pattern``
    (e.g. ``layers`` for ``...layers.3.self_attn.q_proj``)."""
    rx = re.compile(rf"(^|\.)(?:{pattern})\.\d+\.")
    return lambda n: rx.search(n) is not None


def select_targets(
    model: torch.nn.Module,
    *,
    who: str,
    selected: set[str],
    targets: list[str],
    default: Callable[[str], bool],
    default_what: str,
) -> dict[str, torch.nn.Linear]:
    """The Linear layers that get LoRA factors: those whose weight is among the ``selected`` parameter
    names (what ``train_modules`` picks) and that ``targets`` names (module-name suffixes) or, when
    ``targets`` is empty, that ``default`` accepts. None is a typed error naming the field to change."""
    linears = linear_modules(model, lambda n: f"{n}.weight" in selected)
    if not linears:
        raise AdapterConfigError(
            f"{who}: lora_rank > 0 but train_modules selects no Linear layer to put LoRA "
            "factors on; select modules that hold Linear layers (e.g. 'language_model')",
            detail={"field": "train_modules"},
        )
    keep = suffix_match(targets) if targets else default
    out = {n: m for n, m in linears.items() if keep(n)}
    if not out:
        what = f"lora_targets {list(targets)}" if targets else f"the default lora_targets ({default_what})"
        raise AdapterConfigError(
            f"{who}: lora_rank > 0 but {what} name none of the {len(linears)} Linear layers of "
            f"train_modules (e.g. {list(linears)[:3]}); set model.options.lora_targets to "
            "module-name suffixes of those",
            detail={"field": "options.lora_targets"},
        )
    return out


class LoRA(Mapping):
    """Factors ``(A, B)`` by module name (a read-only mapping), their forward hooks, and what checkpoints
    and exports need from them."""

    def __init__(
        self,
        modules: Mapping[str, torch.nn.Linear],
        *,
        rank: int,
        alpha: float,
        device: torch.device,
        saved: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        if rank < 1:
            raise AdapterConfigError(
                f"lora_rank must be >= 1 to attach LoRA factors, got {rank}", detail={"field": "options.lora_rank"}
            )
        self.rank, self.alpha, self.scale = int(rank), float(alpha), float(alpha) / int(rank)
        self.enabled = True
        self._factors: dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]] = {}
        self._handles = []
        for n, m in modules.items():
            if saved is not None and f"{n}.lora_a" in saved:
                a0, b0 = saved[f"{n}.lora_a"].float(), saved[f"{n}.lora_b"].float()
            else:
                a0 = torch.randn(rank, m.in_features) / math.sqrt(m.in_features)
                b0 = torch.zeros(m.out_features, rank)
            a = torch.nn.Parameter(a0.to(device))
            b = torch.nn.Parameter(b0.to(device))
            self._factors[n] = (a, b)
            self._handles.append(m.register_forward_hook(self._hook(a, b)))

    def _hook(self, a: torch.nn.Parameter, b: torch.nn.Parameter):
        scale = self.scale

        def hook(_module, inputs, output):
            if not self.enabled:
                return output
            x = inputs[0]
            return output + scale * ((x.to(a.dtype) @ a.t()) @ b.t()).to(output.dtype)

        return hook

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """The base model alone for the duration: with the base frozen, that is the policy before any
        update, so a KL reference needs no second copy of the weights."""
        was, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = was

    # -- mapping ---------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
        return self._factors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._factors)

    def __len__(self) -> int:
        return len(self._factors)

    # -- training, checkpoints, export -------------------------------------------------------------
    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The trainable factors: ``lora:<module>.a``, ``lora:<module>.b`` per module."""
        return [(f"{PREFIX}{n}.{w}", t) for n, (a, b) in self._factors.items() for w, t in (("a", a), ("b", b))]

    def state(self) -> dict[str, torch.Tensor]:
        """The live factors by trainable-parameter name (an adapter's ``extra_state``)."""
        return dict(self.named_parameters())

    def file_state(self) -> dict[str, torch.Tensor]:
        """The factors as CPU tensors named ``<module>.lora_a`` / ``.lora_b`` (what ``saved`` reads back)."""
        return {
            f"{n}.lora_{w}": t.detach().cpu().contiguous()
            for n, (a, b) in self._factors.items()
            for w, t in (("a", a), ("b", b))
        }

    @torch.no_grad()
    def delta(self, name: str) -> torch.Tensor:
        """``(alpha / r) B A`` of one module, fp32 on the CPU: what merging adds to its weight."""
        a, b = self._factors[name]
        return self.scale * (b.detach().float().cpu() @ a.detach().float().cpu())

    @torch.no_grad()
    def merged(
        self, state_dict: Mapping[str, torch.Tensor], key: Callable[[str], str] = lambda n: f"{n}.weight"
    ) -> dict[str, torch.Tensor]:
        """A copy of ``state_dict`` with ``W + (alpha/r) B A`` for every adapted module (``key`` maps a module
        name to its weight's key); each merged weight keeps its dtype and device."""
        out = dict(state_dict)
        for n in self._factors:
            k = key(n)
            w = out[k]
            out[k] = (w.detach().float() + self.delta(n).to(w.device)).to(w.dtype)
        return out

    def describe(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "modules": len(self._factors)}


def lora_base_is_reference(lora: "LoRA | None", spec) -> bool:
    """A LoRA policy whose KL reference is its own base model (``ref_model_dir`` = ``model.path``, the
    trainer's default): the frozen base with the factors off is the policy before any update, so no
    second copy is loaded (``LoRA.disabled`` around the reference passes)."""
    if lora is None or not spec.ref_model_dir:
        return False
    return os.path.realpath(spec.ref_model_dir) == os.path.realpath(spec.model_dir)


__all__ = [
    "LoRA",
    "lora_base_is_reference",
    "PREFIX",
    "linear_modules",
    "select_targets",
    "suffix_match",
    "within_blocks",
]
