"""Finding objects in an RGB image: palette quantisation, connected components, template shapes.

Built for images decoded from VQ tokens, so it tolerates blur and noise: pixels snap to the nearest
palette colour (or background), specks are dropped, and shapes are the nearest template by pixel
disagreement (anything too far from every template, or of the wrong size, is ``"unknown"``; it
still counts as an object, so junk in a generated image costs reward).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .render import SHAPE_MASKS
from .vocab import BACKGROUND, CELL, COLORS, GRID, SHAPE_SIZE

_PALETTE_NAMES = ("background", *COLORS)
_PALETTE = np.array([BACKGROUND, *COLORS.values()], np.float32)  # (P, 3)

MIN_AREA = 5  # components smaller than this are decoding specks, not objects
MAX_MISMATCH = 6  # template pixels (of 36) that may disagree before a shape becomes "unknown"
SIZE_SLACK = 2  # bbox side may differ from SHAPE_SIZE by this much and still be classified


@dataclass(frozen=True)
class Detection:
    shape: str  # one of SHAPES or "unknown"
    color: str
    row: int  # grid cell of the centroid
    col: int
    area: int
    cy: float  # centroid, pixels
    cx: float


FG_DISTANCE = 55.0  # RGB distance from the background; palette colours sit 127-163 away


def quantize(image: np.ndarray) -> np.ndarray:
    """(H, W) int labels: 0 = background, i = i-th COLORS entry (nearest palette colour).

    Colours are compared as directions away from the background (cosine), so a decoder that gets
    a colour's hue right but its strength wrong still reads as that colour; pixels closer to the
    background than to any colour stay background (the faint halo around shapes).
    """
    px = image.reshape(-1, 3).astype(np.float32)
    off = px - _PALETTE[0]
    fg = np.linalg.norm(off, axis=1) > FG_DISTANCE
    dirs = _PALETTE[1:] - _PALETTE[0]
    cos = (off @ dirs.T) / (np.linalg.norm(off, axis=1, keepdims=True) * np.linalg.norm(dirs, axis=1) + 1e-6)
    labels = np.where(fg, cos.argmax(1) + 1, 0)
    return labels.reshape(image.shape[:2])


def _neighbours(y: int, x: int):
    return ((y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components (the ring touches itself diagonally) of a boolean mask, each as an (n, 2) array of (y, x)."""
    seen = np.zeros_like(mask, bool)
    h, w = mask.shape
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        q, pts = deque([(y0, x0)]), []
        while q:
            y, x = q.popleft()
            pts.append((y, x))
            for ny, nx in _neighbours(y, x):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    q.append((ny, nx))
        out.append(np.array(pts))
    return out


def classify(pts: np.ndarray) -> str:
    """Nearest shape template for one component (bbox resampled to SHAPE_SIZE squared)."""
    y0, x0 = pts.min(0)
    y1, x1 = pts.max(0) + 1
    h, w = y1 - y0, x1 - x0
    if abs(h - SHAPE_SIZE) > SIZE_SLACK or abs(w - SHAPE_SIZE) > SIZE_SLACK:
        return "unknown"
    crop = np.zeros((h, w), bool)
    crop[pts[:, 0] - y0, pts[:, 1] - x0] = True
    if (h, w) != (SHAPE_SIZE, SHAPE_SIZE):  # nearest-neighbour resample to the template grid
        ys = ((np.arange(SHAPE_SIZE) + 0.5) * h / SHAPE_SIZE).astype(int)
        xs = ((np.arange(SHAPE_SIZE) + 0.5) * w / SHAPE_SIZE).astype(int)
        crop = crop[ys][:, xs]
    best, best_d = "unknown", MAX_MISMATCH + 1
    for name, tmpl in SHAPE_MASKS.items():
        d = int((crop != tmpl).sum())
        if d < best_d:
            best, best_d = name, d
    return best


def detect(image: np.ndarray) -> list[Detection]:
    """All objects in one (H, W, 3) uint8 image, in raster order of their first pixel."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {tuple(image.shape)}")
    labels = quantize(image)
    scale = GRID * CELL / image.shape[0], GRID * CELL / image.shape[1]  # tolerate other sizes
    dets = []
    for ci in range(1, len(_PALETTE_NAMES)):
        for pts in _components(labels == ci):
            if len(pts) < MIN_AREA:
                continue
            cy, cx = pts.mean(0)
            row = min(GRID - 1, int(cy * scale[0] // CELL))
            col = min(GRID - 1, int(cx * scale[1] // CELL))
            dets.append(Detection(classify(pts), _PALETTE_NAMES[ci], row, col, len(pts), float(cy), float(cx)))
    return dets
