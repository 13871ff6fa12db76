"""``shapes``: the programmatic GenEval-style reward for ShapesWorld prompts.

It parses the prompt (shapes, colours, counts, relations), detects objects in the image (palette
quantisation + connected components + template shapes) and scores the fraction of the prompt's
constraints that hold (``mode="graded"``, default) or 1/0 for all-or-nothing (``mode="binary"``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import BadRequest
from ..rewards import reward
from .detect import detect
from .judge import judge
from .prompts import PromptError, parse_prompt

MODES = ("graded", "binary")


class ShapesScorer:
    def __init__(self, mode: str = "graded") -> None:
        if mode not in MODES:
            raise BadRequest(f"shapes reward: mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self._specs: dict[str, object] = {}  # RL scores the same prompts many times

    def _spec(self, prompt: str):
        spec = self._specs.get(prompt)
        if spec is None:
            try:
                spec = parse_prompt(prompt)
            except PromptError as e:
                raise BadRequest(f"shapes reward: {e}") from None
            self._specs[prompt] = spec
        return spec

    def score_both(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(graded, binary) scores, each (B,) float32."""
        if (
            not isinstance(images, torch.Tensor)
            or images.dtype != torch.uint8
            or images.ndim != 4
            or images.shape[-1] != 3
        ):
            raise BadRequest("shapes reward: images must be a uint8 tensor of shape (B, H, W, 3)")
        if len(prompts) != images.shape[0]:
            raise BadRequest(f"shapes reward: {images.shape[0]} images but {len(prompts)} prompts")
        arr = images.cpu().numpy()
        graded = np.zeros(len(prompts), np.float32)
        binary = np.zeros(len(prompts), np.float32)
        for i, p in enumerate(prompts):
            graded[i], binary[i] = judge(self._spec(p), detect(arr[i]))
        return torch.from_numpy(graded), torch.from_numpy(binary)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        graded, binary = self.score_both(images, prompts)
        return graded if self.mode == "graded" else binary


@reward("shapes")
def make_shapes_scorer(config: dict) -> ShapesScorer:
    return ShapesScorer(mode=str(config.get("mode", "graded")))
