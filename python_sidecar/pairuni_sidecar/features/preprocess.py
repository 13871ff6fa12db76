"""Image decoding and ImageNet-style preprocessing with PIL + numpy (no torchvision)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageDecodeError(ValueError):
    """An image payload that PIL cannot decode; ``index`` is its position in the request."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"image #{index}: cannot decode ({reason})")
        self.index = index


def decode(data: bytes, index: int = 0) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as e:  # noqa: BLE001 - PIL raises many types
        raise ImageDecodeError(index, f"{type(e).__name__}: {e}") from None
    return im.convert("RGB")


def resize_center_crop(im: Image.Image, resize: int, crop: int) -> Image.Image:
    """Shorter side → ``resize`` (bilinear), then a centred ``crop``×``crop`` square."""
    w, h = im.size
    s = resize / min(w, h)
    nw, nh = max(crop, round(w * s)), max(crop, round(h * s))
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - crop) // 2, (nh - crop) // 2
    return im.crop((left, top, left + crop, top + crop))


def to_tensor(ims: list[Image.Image], mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """List of equally sized RGB images → normalised float32 NCHW batch."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in ims]) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))
