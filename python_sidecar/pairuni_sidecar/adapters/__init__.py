"""Policy adapters: one file per model family, all behind ``base.PolicyAdapter``.

``load_adapter("janus", LoadSpec(...))`` imports the family module on first use, so a missing optional
dependency (transformers for Janus) only fails the family that needs it. See README.md here for the
model-directory contract.
"""
from __future__ import annotations

import importlib

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

#: family name -> "module:Class" (lazy, so importing the package never imports transformers)
_FAMILIES: dict[str, str] = {
    "janus": "pairuni_sidecar.adapters.janus:JanusAdapter",
}


def register_adapter(name: str, target: str) -> None:
    """Register a user adapter as ``"package.module:ClassName"`` (a ``PolicyAdapter`` subclass)."""
    if name in _FAMILIES and _FAMILIES[name] != target:
        raise ValueError(f"adapter {name!r} already registered as {_FAMILIES[name]}")
    _FAMILIES[name] = target


def list_adapters() -> list[str]:
    return sorted(_FAMILIES)


def adapter_class(name: str) -> type[PolicyAdapter]:
    if name not in _FAMILIES:
        raise AdapterConfigError(f"unknown adapter {name!r}; registered: {list_adapters()}")
    mod_name, cls_name = _FAMILIES[name].split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise AdapterConfigError(
            f"adapter {name!r} needs a package that is not installed ({e}); "
            f"install the extra, e.g. pip install 'pairuni-sidecar[{name}]'"
        ) from None
    return getattr(mod, cls_name)


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
