"""The project's tiny masked-diffusion unified model (Lumina-DiMOO conventions at toy size).

A bidirectional pre-LN transformer over one vocabulary: text tokens first (a ``tokenizers`` file),
then the layout's special ids (MASK, NEWLINE, BOA/EOA, BOI/EOI, <uncondition>, pad, EOS), then
the image codes. Images are tokenised by a ``palette`` codec: an H x W grid of cells, code k fills
its cell with colour k of a fixed palette (exact and training-free; the tests need nothing learned).

Model directory: ``config.json`` (``model_type: pairuni_tiny_mdm``: sizes, layout, image grid, codec),
``model.safetensors`` and ``tokenizer.json``.

    python -m pairuni_sidecar.diffusion.tiny_model OUT_DIR [--seed 0]
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..fsutil import atomic_dir
from .layout import TokenLayout

MODEL_TYPE = "pairuni_tiny_mdm"
SPECIAL_NAMES = ("mask", "newline", "boa", "eoa", "boi", "eoi", "uncond", "pad", "eos")


@dataclass
class TinyMDMConfig:
    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    max_len: int = 256
    dropout: float = 0.0


class _Block(nn.Module):
    def __init__(self, c: TinyMDMConfig) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.qkv, self.out = nn.Linear(c.d_model, 3 * c.d_model), nn.Linear(c.d_model, c.d_model)
        self.ff = nn.Sequential(nn.Linear(c.d_model, c.d_ff), nn.GELU(), nn.Linear(c.d_ff, c.d_model))
        self.drop = nn.Dropout(c.dropout)
        self.heads = c.n_heads

    def forward(self, h: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        B, S, D = h.shape
        q, k, v = self.qkv(self.n1(h)).view(B, S, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn, dropout_p=self.drop.p if self.training else 0.0)
        h = h + self.drop(self.out(a.transpose(1, 2).reshape(B, S, D)))
        return h + self.drop(self.ff(self.n2(h)))


class TinyMDM(nn.Module):
    """Bidirectional transformer: ``forward(ids, keep, pos=None)`` -> logits at ``pos`` (B, n, V) (all
    positions when ``pos`` is None). Padding keys (``keep`` False) are invisible to every query."""

    def __init__(self, c: TinyMDMConfig) -> None:
        super().__init__()
        self.config = c
        self.tok = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = nn.Embedding(c.max_len, c.d_model)
        self.blocks = nn.ModuleList(_Block(c) for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, ids: torch.Tensor, keep: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        S = ids.shape[1]
        if S > self.config.max_len:
            raise ValueError(f"sequence of {S} tokens exceeds the tiny model's max_len {self.config.max_len}")
        h = self.drop(self.tok(ids) + self.pos(torch.arange(S, device=ids.device)))
        attn = keep[:, None, None, :]
        for b in self.blocks:
            h = b(h, attn)
        if pos is not None:
            h = h.gather(1, pos.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        return self.head(self.norm(h))


def tiny_layout(n_text: int, codebook: int) -> TokenLayout:
    ids = {name: n_text + i for i, name in enumerate(SPECIAL_NAMES)}
    base = n_text + len(SPECIAL_NAMES)
    return TokenLayout(**ids, code_base=base, codebook=codebook, vocab_size=base + codebook)


# -- the palette image codec ----------------------------------------------------------------------


def palette(codebook: int) -> np.ndarray:
    """(codebook, 3) uint8 colours, fixed by the code count (a seeded draw, code 0 mid-grey)."""
    rng = np.random.default_rng(codebook)
    p = rng.integers(0, 256, size=(codebook, 3)).astype(np.uint8)
    p[0] = (128, 128, 128)
    return p


class PaletteCodec:
    def __init__(self, grid: tuple[int, int], cell: int, codebook: int) -> None:
        self.h, self.w = grid
        self.cell = cell
        self.colors = palette(codebook)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.h * self.cell, self.w * self.cell

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, H*W) -> uint8 images (B, H*cell, W*cell, 3)."""
        c = codes.cpu().numpy().reshape(-1, self.h, self.w)
        img = self.colors[c]  # (B, H, W, 3)
        return torch.from_numpy(img.repeat(self.cell, 1).repeat(self.cell, 2).copy())

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, H*cell, W*cell, 3) -> codes (B, H*W): nearest palette colour of each cell mean."""
        x = images.float().reshape(-1, self.h, self.cell, self.w, self.cell, 3).mean((2, 4))
        d = ((x.unsqueeze(-2) - torch.from_numpy(self.colors).float()) ** 2).sum(-1)
        return d.argmin(-1).reshape(x.shape[0], -1)


def char_tokenizer():
    """A character-level ``tokenizers.Tokenizer`` over printable ASCII and newline (ids 0..95)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    tk = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token="?"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return tk


def save_tiny_mdm(
    out_dir: str,
    model: TinyMDM,
    tokenizer,
    *,
    layout: TokenLayout,
    grid: tuple[int, int],
    cell: int,
    extra: dict | None = None,
) -> str:
    from safetensors.torch import save_file

    cfg = {
        "model_type": MODEL_TYPE,
        **asdict(model.config),
        "layout": asdict(layout),
        "grid": list(grid),
        "cell": cell,
        "codec": "palette",
        **(extra or {}),
    }
    card = cfg.pop("card", None)
    with atomic_dir(out_dir) as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        save_file(
            {k: v.detach().contiguous() for k, v in model.state_dict().items()}, os.path.join(tmp, "model.safetensors")
        )
        tokenizer.save(os.path.join(tmp, "tokenizer.json"))
        if card is not None:  # pairuni_model.json: family, prompt format, adapter options, pretraining record
            with open(os.path.join(tmp, "pairuni_model.json"), "w") as f:
                json.dump(card, f, indent=2)
    return out_dir


#: Positions of a built tiny DiMOO: the default understanding prompt (src/grpo/rewards.ts
#: DEFAULT_UND_INSTRUCTION, about 230 characters with the template and image, one token each) plus the
#: default und.maxNewTokens 512 answer slots, with room for a longer question.
TINY_MAX_LEN = 1024


def build_tiny_dimoo(
    out_dir: str,
    *,
    seed: int = 0,
    grid: tuple[int, int] = (4, 4),
    cell: int = 4,
    codebook: int = 16,
    dropout: float = 0.0,
    max_len: int = TINY_MAX_LEN,
    **sizes,
) -> str:
    """Write a tiny random-init masked-diffusion model directory (the ``tiny`` plug-in for ``dimoo``)."""
    tok = char_tokenizer()
    lay = tiny_layout(tok.get_vocab_size(), codebook)
    torch.manual_seed(seed)
    model = TinyMDM(TinyMDMConfig(vocab_size=lay.vocab_size, dropout=dropout, **sizes))
    if max_len != model.config.max_len:
        _resize_positions(model, max_len, seed)
    return save_tiny_mdm(out_dir, model, tok, layout=lay, grid=grid, cell=cell)


def _resize_positions(model: TinyMDM, max_len: int, seed: int) -> None:
    """Positions past the config default come from their own generator, so every other weight of a seed
    (and its first positions) stays what it was when the builder made 256 positions."""
    old = model.pos.weight.data
    extra = torch.randn(max(0, max_len - old.shape[0]), old.shape[1], generator=torch.Generator().manual_seed(seed))
    model.pos = nn.Embedding(max_len, old.shape[1])
    model.pos.weight.data.copy_(torch.cat([old, extra])[:max_len])
    model.config.max_len = max_len


if __name__ == "__main__":
    from pairuni_sidecar.registry import tiny_main

    raise SystemExit(tiny_main("dimoo"))
