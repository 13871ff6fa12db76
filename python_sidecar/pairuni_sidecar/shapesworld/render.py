"""Rasterising scenes: exact, anti-alias-free pixels so the VQ tokenizer sees a small set of patches."""

from __future__ import annotations

import numpy as np

from .scenes import Obj
from .vocab import BACKGROUND, CELL, COLORS, IMAGE_SIZE, SHAPE_SIZE


def _masks() -> dict[str, np.ndarray]:
    s = SHAPE_SIZE
    yy, xx = np.mgrid[0:s, 0:s] + 0.5
    c = s / 2
    # A hollow ring: solid discs would differ from the square by only four corner pixels at
    # this size, too fragile after VQ decoding; the ring differs from every other shape by >= 16.
    r = (xx - c) ** 2 + (yy - c) ** 2
    circle = (r <= (s / 2) ** 2) & (r >= (s / 2 - 1.2) ** 2)
    square = np.ones((s, s), bool)
    # Apex-up triangle: row r is 2*ceil((r+1)/2) wide, centred (widths 2,2,4,4,6,6 at s=6).
    triangle = np.zeros((s, s), bool)
    for r in range(s):
        half = r // 2 + 1
        triangle[r, s // 2 - half : s // 2 + half] = True
    arm = max(2, s // 3)
    lo = (s - arm) // 2
    cross = np.zeros((s, s), bool)
    cross[lo : lo + arm, :] = True
    cross[:, lo : lo + arm] = True
    return {"circle": circle, "square": square, "triangle": triangle, "cross": cross}


SHAPE_MASKS = _masks()


def render(objects: tuple[Obj, ...] | list[Obj]) -> np.ndarray:
    """(IMAGE_SIZE, IMAGE_SIZE, 3) uint8 image of the objects on a black background."""
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    img[:] = BACKGROUND
    off = (CELL - SHAPE_SIZE) // 2
    for o in objects:
        y0, x0 = o.row * CELL + off, o.col * CELL + off
        region = img[y0 : y0 + SHAPE_SIZE, x0 : x0 + SHAPE_SIZE]
        region[SHAPE_MASKS[o.shape]] = COLORS[o.color]
    return img
