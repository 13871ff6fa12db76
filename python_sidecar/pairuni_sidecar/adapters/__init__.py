"""Policy adapters: one file per model family, all behind ``base.PolicyAdapter``.

``load_adapter("janus", LoadSpec(...))`` imports the family module on first use, so a missing optional
dependency (transformers for Janus) only fails the family that needs it. See README.md here for the
model-directory contract.
"""

from __future__ import annotations

from ..errors import BadRequest
from ..registry import names, register, resolve
from .base import (
    AdapterConfigError,
    CapabilityError,
    CheckpointNotFound,
    GenItem,
    LoadSpec,
    PolicyAdapter,
    RolloutBatch,
    SamplingCfg,
    SFTExample,
    UndItem,
)


def register_adapter(name: str, target: str | type[PolicyAdapter]) -> None:
    """Register a user adapter (a ``PolicyAdapter`` subclass, or ``"package.module:ClassName"``)."""
    register("adapter", name, target)


def list_adapters() -> list[str]:
    return names("adapter")


def adapter_class(name: str) -> type[PolicyAdapter]:
    try:
        return resolve("adapter", name)
    except BadRequest as e:
        raise AdapterConfigError(str(e), detail=e.detail) from None


def load_adapter(name: str, spec: LoadSpec) -> PolicyAdapter:
    return adapter_class(name)(spec)


__all__ = [
    "AdapterConfigError",
    "CapabilityError",
    "CheckpointNotFound",
    "GenItem",
    "LoadSpec",
    "PolicyAdapter",
    "RolloutBatch",
    "SamplingCfg",
    "SFTExample",
    "UndItem",
    "adapter_class",
    "list_adapters",
    "load_adapter",
    "register_adapter",
]
