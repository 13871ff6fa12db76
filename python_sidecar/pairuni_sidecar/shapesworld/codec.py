"""The ShapesWorld image codec of the tiny DiMOO: one code per grid cell, code 0 = empty, code
``1 + 4 * shape + colour`` = that object (``shapesworld.vq.object_code``). Decoding renders the scene
exactly; encoding detects the objects of a rendered image. It stands in for DiMOO's learned VQ at toy
size: exact in both directions, so the demo measures the policy, not a tokenizer's blur."""

from __future__ import annotations

import numpy as np
import torch

from .detect import detect
from .render import render
from .scenes import COLOR_NAMES, Obj
from .vocab import CELL, GRID, SHAPES
from .vq import NUM_SCENE_CODES, object_code


class ShapesCodec:
    h = w = GRID
    codebook = NUM_SCENE_CODES

    @property
    def image_size(self) -> tuple[int, int]:
        return GRID * CELL, GRID * CELL

    def objects(self, codes) -> list[Obj]:
        out = []
        for i, c in enumerate(int(x) for x in codes):
            if 0 < c < NUM_SCENE_CODES:
                s, k = divmod(c - 1, len(COLOR_NAMES))
                out.append(Obj(SHAPES[s], COLOR_NAMES[k], i // GRID, i % GRID))
        return out

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.stack([render(self.objects(row)) for row in codes.cpu().tolist()]))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(images.shape[0], GRID * GRID, dtype=torch.long)
        for b, img in enumerate(images.cpu().numpy()):
            for d in detect(img):
                if d.shape in SHAPES:
                    out[b, d.row * GRID + d.col] = object_code(d.shape, d.color)
        return out


def make_shapes_codec(config: dict) -> ShapesCodec:
    """The ``codec`` plug-in ``shapes``: its layout is fixed by ShapesWorld, so the config adds nothing."""
    return ShapesCodec()
