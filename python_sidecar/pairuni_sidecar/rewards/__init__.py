"""Generation-reward registry.

A reward is registered under a name with a factory ``factory(config: dict) -> Scorer``; a Scorer has
``score(images, prompts) -> torch.Tensor`` of shape (B,) float32, where ``images`` is a uint8 tensor
(B, H, W, 3) and ``prompts`` a list of B strings. Users plug in their own scorer with
``@reward("my_name")`` in a module passed to the sidecar via ``--ops my.module``.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from ..errors import BadRequest


class Scorer(Protocol):
    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor: ...


_REWARDS: dict[str, Callable[[dict], Scorer]] = {}


def reward(name: str) -> Callable[[Callable[[dict], Scorer]], Callable[[dict], Scorer]]:
    def deco(factory: Callable[[dict], Scorer]) -> Callable[[dict], Scorer]:
        if name in _REWARDS and _REWARDS[name] is not factory:
            raise ValueError(f"reward {name!r} registered twice")
        _REWARDS[name] = factory
        return factory

    return deco


def make_reward(name: str, config: dict | None = None) -> Scorer:
    if name not in _REWARDS:
        raise BadRequest(f"unknown reward {name!r}; registered: {sorted(_REWARDS)}")
    return _REWARDS[name](config or {})


def list_rewards() -> list[str]:
    return sorted(_REWARDS)
