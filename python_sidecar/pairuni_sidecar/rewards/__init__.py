"""Generation-reward registry.

A reward is registered under a name with a factory ``factory(config: dict) -> Scorer``; a Scorer has
``score(images, prompts) -> torch.Tensor`` of shape (B,) float32, where ``images`` is a uint8 tensor
(B, H, W, 3) and ``prompts`` a list of B strings. Users plug in their own scorer with
``@reward("my_name")`` in a plug-in module (``--plugins my.module``), or declare it in that module's
``PLUGINS = {"reward": {"my_name": "my.module:factory"}}``.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from ..registry import names, plugin, resolve


class Scorer(Protocol):
    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor: ...


def reward(name: str) -> Callable[[Callable[[dict], Scorer]], Callable[[dict], Scorer]]:
    """Register a reward factory in the sidecar's one registry (``@reward("my_score")``)."""
    return plugin("reward", name)


def make_reward(name: str, config: dict | None = None) -> Scorer:
    return resolve("reward", name)(config or {})


def list_rewards() -> list[str]:
    return names("reward")
