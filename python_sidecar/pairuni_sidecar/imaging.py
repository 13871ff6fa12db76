"""Small image helpers shared by the training ops and the ShapesWorld tools."""

from __future__ import annotations

import numpy as np
import torch

from .fsutil import atomic_file


def save_grid(
    images: torch.Tensor, path: str, nrow: int = 4, max_images: int = 16, pad: int = 2, scale: int = 1
) -> tuple[int, int]:
    """Tile uint8 (B, H, W, 3) images into one PNG at ``path`` (written atomically); ``scale``
    enlarges each image by pixel repetition (tiny images stay legible in a report)."""
    from PIL import Image

    imgs = images[: max(1, max_images)].numpy()
    if scale > 1:
        imgs = imgs.repeat(scale, axis=1).repeat(scale, axis=2)
    b, h, w, _ = imgs.shape
    nrow = max(1, min(nrow, b))
    rows = (b + nrow - 1) // nrow
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(b):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = imgs[i]
    with atomic_file(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return grid.shape[1], grid.shape[0]
