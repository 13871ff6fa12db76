"""Batched embedding of encoded images (bytes) with a loaded backbone."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .backbones import Backbone
from .preprocess import decode


def decode_images(blob: np.ndarray, offsets: np.ndarray, start: int, stop: int):
    """Decode images ``start..stop`` of a concatenated byte blob with ``offsets`` (length n+1)."""
    return [decode(blob[offsets[i] : offsets[i + 1]].tobytes(), i) for i in range(start, stop)]


def embed_images(
    backbone: Backbone,
    blob: np.ndarray,
    offsets: np.ndarray,
    batch_size: int = 32,
    check: Callable[[], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """L2-normalised float32 features [n, dim] for the n images in ``blob``."""
    n = len(offsets) - 1
    parts = []
    for s in range(0, n, batch_size):
        if check:
            check()
        e = min(n, s + batch_size)
        parts.append(backbone.embed(decode_images(blob, offsets, s, e)))
        if progress:
            progress(e, n)
    if not parts:
        return np.zeros((0, max(backbone.dim, 0)), np.float32)
    return np.concatenate(parts)
