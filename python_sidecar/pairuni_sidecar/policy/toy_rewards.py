"""Dense, weight-free generation rewards for smoke tests, CI and the tiny examples.

``brightness``: mean pixel intensity in [0, 1] (``{"target": t}`` turns it into ``-|mean - t|``).
It needs no model, so a tiny random policy gets a reward with within-group variance and PairGRPO's
generation side can be checked end to end (the image-side analogue of DDPO's toy objectives).
"""

from __future__ import annotations

import torch

from ..rewards import reward
from ..rewards.hps import check_images


class Brightness:
    def __init__(self, target: float | None = None) -> None:
        self.target = None if target is None else float(target)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        check_images(images, prompts)
        mean = images.float().mean(dim=(1, 2, 3)) / 255.0
        return (mean if self.target is None else -(mean - self.target).abs()).to(torch.float32)


@reward("brightness")
def make_brightness(config: dict) -> Brightness:
    return Brightness(config.get("target"))
