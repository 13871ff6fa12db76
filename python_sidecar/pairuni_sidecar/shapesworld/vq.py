"""Training and using the VQ image tokenizer (``model.model.vqmodel``) on ShapesWorld images.

Codes are *scene-aligned*: code 0 is an empty cell and code ``1 + 4*shape + colour`` is that
object in its cell, taken from the generator's scene. A plain VQ (learned code assignment with
dead-code restarts) trained too slowly on one CPU thread: after 600-1500 steps its
reconstructions scored only ~0.2-0.37 graded shapes reward. So the assignment is supervised and the rest is VQ training:
the decoder learns to reconstruct images from codebook vectors, the encoder learns to pick the
right code (cross-entropy on cosine similarities) plus the usual commitment term.

HF's ``JanusVQVAE.decode`` L2-normalises codebook rows while ``encode`` takes the Euclidean
argmin, so the codebook is kept on the unit sphere after every step: then Euclidean argmin equals
cosine argmax and HF's own ``encode``/``decode`` reproduce training exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .scenes import COLOR_NAMES, Obj
from .vocab import BACKGROUND, GRID, SHAPES

_BG_PIXEL = torch.tensor(BACKGROUND, dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1
NUM_SCENE_CODES = 1 + len(SHAPES) * len(COLOR_NAMES)
CODE_TEMPERATURE = 0.1  # cosine logits / T for the code cross-entropy


def object_code(shape: str, color: str) -> int:
    return 1 + SHAPES.index(shape) * len(COLOR_NAMES) + COLOR_NAMES.index(color)


def scene_codes(objects: tuple[Obj, ...] | list[Obj]) -> torch.Tensor:
    """(GRID*GRID,) int64 codes of one scene, row-major (the order image tokens are generated in)."""
    codes = torch.zeros(GRID * GRID, dtype=torch.long)
    for o in objects:
        codes[o.row * GRID + o.col] = object_code(o.shape, o.color)
    return codes


def _latents(vq, pixels: torch.Tensor) -> torch.Tensor:
    """Unit-norm pre-quantisation latents (B, h*w, D)."""
    z = F.normalize(vq.quant_conv(vq.encoder(pixels)), dim=1)
    return z.flatten(2).transpose(1, 2)


def _book(vq) -> torch.Tensor:
    return F.normalize(vq.quantize.embedding.weight, dim=1)


def vq_loss(vq, pixels: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Reconstruction (from the target codes) + code cross-entropy + commitment."""
    b = pixels.shape[0]
    n = codes.shape[1]
    h = int(round(n**0.5))
    book = _book(vq)
    zq = book[codes]  # (B, n, D)
    rec = vq.decoder(vq.post_quant_conv(zq.transpose(1, 2).reshape(b, -1, h, h)))
    # Object pixels are ~10% of an image: weight them up so shapes, not background, drive the loss.
    fg = ((pixels - _BG_PIXEL).abs().amax(1, keepdim=True) > 0.2).float()
    wt = 1.0 + 3.0 * fg
    mse = ((rec - pixels) ** 2 * wt).mean() / wt.mean()
    z = _latents(vq, pixels)
    logits = (z @ book.t()) / CODE_TEMPERATURE
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1))
    commit = vq.quantize.beta * F.mse_loss(z, zq.detach())
    acc = (logits.argmax(-1) == codes).float().mean()
    return mse + ce + commit, {"mse": float(mse.detach()), "ce": float(ce.detach()), "code_acc": float(acc)}


@torch.no_grad()
def renorm_codebook(vq) -> None:
    w = vq.quantize.embedding.weight
    w.copy_(F.normalize(w, dim=1))


@torch.no_grad()
def encode_codes(vq, pixels: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Image codes (B, h*w): cosine argmax, equal to HF ``vqmodel.encode`` on a unit-norm codebook."""
    book = _book(vq)
    return torch.cat(
        [(_latents(vq, pixels[i : i + batch]) @ book.t()).argmax(-1) for i in range(0, pixels.shape[0], batch)]
    )
