"""Token layout of a masked-diffusion unified model and the sequences built from it.

Lumina-DiMOO hard-codes its special ids (``config.py::SPECIAL_TOKENS`` upstream); image code k is
token ``code_base + k``. The tiny model uses the same structure with small ids. Sequences:

- understanding: ``prompt[:-1] + [BOI] + rows + [EOI] + prompt[-1:] + [BOA] + [MASK]*L + [EOA]``
  where ``rows`` is H rows of (W codes + NEWLINE) and L the answer slots;
- generation: ``prompt + [BOA, BOI] + H rows of ([MASK]*W + [NEWLINE]) + [EOI, EOA]``; the
  unconditional (CFG) row replaces the prompt with ``uncond_prompt`` and keeps the same image region.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class TokenLayout:
    mask: int
    newline: int
    boa: int
    eoa: int
    boi: int
    eoi: int
    uncond: int
    pad: int
    eos: int
    code_base: int
    codebook: int
    vocab_size: int

    @property
    def code_end(self) -> int:
        return self.code_base + self.codebook

    @property
    def specials(self) -> tuple[int, ...]:
        return (self.mask, self.newline, self.boa, self.eoa, self.boi, self.eoi, self.uncond, self.pad, self.eos)

    def check(self, where: str) -> None:
        from ..adapters.base import AdapterConfigError

        bad = [k for k, v in asdict(self).items() if k != "vocab_size" and not (0 <= v < self.vocab_size)]
        if bad or self.code_end > self.vocab_size:
            raise AdapterConfigError(
                f"{where}: token layout outside the vocabulary of {self.vocab_size} "
                f"({bad or ['code range ends at ' + str(self.code_end)]})"
            )
        if any(self.code_base <= s < self.code_end for s in self.specials if s not in (self.newline,)):
            raise AdapterConfigError(f"{where}: a special id falls inside the image-code range")

    def text_support(self, device=None) -> torch.Tensor:
        """(V,) additive bias: 0 for tokens a text answer may hold, -inf for MASK and image codes.
        The text sampler and the estimator use the same support, so the estimated log-probs are of
        the distribution the rollout drew from."""
        bias = torch.zeros(self.vocab_size, device=device)
        bias[self.code_base : self.code_end] = float("-inf")
        bias[self.mask] = float("-inf")
        return bias


def dimoo_layout(vocab_size: int) -> TokenLayout:
    """Lumina-DiMOO's ids (upstream ``config.py``), with the checkpoint's vocabulary size."""
    return TokenLayout(
        mask=126336,
        newline=126084,
        boa=126354,
        eoa=126355,
        boi=126349,
        eoi=126350,
        uncond=126351,
        pad=126339,
        eos=126081,
        code_base=126356,
        codebook=8192,
        vocab_size=int(vocab_size),
    )


def image_rows(codes: torch.Tensor | list[int], h: int, w: int, lay: TokenLayout) -> list[int]:
    """H rows of (W code tokens + NEWLINE) for codes (H*W,) given as code indices (0..codebook-1)."""
    c = [int(x) for x in (codes.tolist() if isinstance(codes, torch.Tensor) else codes)]
    if len(c) != h * w:
        raise ValueError(f"image_rows: {len(c)} codes for a {h}x{w} grid")
    out: list[int] = []
    for r in range(h):
        out += [lay.code_base + x for x in c[r * w : (r + 1) * w]] + [lay.newline]
    return out


def und_sequence(
    pre: list[int], post: list[int], codes, h: int, w: int, slots: int, lay: TokenLayout
) -> tuple[list[int], int]:
    """``pre + [BOI] + rows + [EOI] + post + [BOA] + [MASK]*slots + [EOA]``; returns (ids, first slot index).
    Upstream (VLMEvalKit) puts the image before the prompt's last token: ``post`` = that token."""
    head = list(pre) + [lay.boi] + image_rows(codes, h, w, lay) + [lay.eoi] + list(post) + [lay.boa]
    return head + [lay.mask] * slots + [lay.eoa], len(head)


def gen_region(h: int, w: int, lay: TokenLayout) -> tuple[list[int], list[int]]:
    """The masked image region ``[BOA, BOI] + rows + [EOI, EOA]`` and the offsets of its code slots."""
    region = [lay.boa, lay.boi]
    slots = []
    for _ in range(h):
        slots += list(range(len(region), len(region) + w))
        region += [lay.mask] * w + [lay.newline]
    return region + [lay.eoi, lay.eoa], slots


def right_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, S) and the key mask (B, S) bool of real tokens (upstream pads on the right)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    keep = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        keep[i, : len(s)] = True
    return ids, keep
