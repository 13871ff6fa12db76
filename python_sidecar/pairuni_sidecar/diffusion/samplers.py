"""Batched samplers of a masked-diffusion model (upstream's image sampler asserts batch 1).

Both take ``logits_at(ids (B, S), keep (B, S) bool, pos (B, n)) -> (B, n, V)``: the model's logits at
the positions ``pos`` of right-padded rows (``keep`` marks real tokens). Randomness is drawn per row
from that row's own generator, and only over the row's own slots, so a row's result does not depend
on which other rows share its batch: a batch equals its rows sampled one by one with the same seeds
(up to the float rounding of the batched forward).

- text: LLaDA low-confidence remasking. The answer slots are split into blocks; each block gets
  ``steps / blocks`` steps; each step proposes a token for every slot by Gumbel-max on
  ``z / T`` (T > 0, so two rollouts of one prompt differ) and commits a fixed number
  (linear schedule) of the still-masked slots of the current block with the highest probability.
- image: MaskGIT. Each step draws every masked code by Gumbel-max on ``z / T`` over the image-code
  range only, then keeps ``floor(N cos(pi/2 (t+1)/steps))`` of them masked: those with the lowest
  ``log p + T * gumbel``. Row separators, BOI/EOI/BOA/EOA never change.

With classifier-free guidance ``z = u + w (c - u)``: ``w = 1`` is no guidance; upstream's scale s is
``w = s + 1`` (DiMOO's default s = 4 is w = 5).
"""

from __future__ import annotations

import math

import torch

from .layout import TokenLayout


def row_seed(seed: int, row: int) -> int:
    """The seed of trajectory ``row`` of a batch seeded with ``seed`` (stable under re-batching)."""
    return (int(seed) * 1_000_003 + int(row) * 7919 + 1) % (2**62)


def generators(seeds: list[int], device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def gumbel(shape, g: torch.Generator, device) -> torch.Tensor:
    e = torch.empty(shape, device=device).exponential_(generator=g)
    return -torch.log(e.clamp(min=1e-30))


def guided(logits_at, ids, keep, pos, uncond: tuple | None, w: float) -> torch.Tensor:
    """Logits at ``pos``, guided as ``u + w (c - u)`` when ``uncond = (ids_u, keep_u, pos_u)`` is given."""
    c = logits_at(ids, keep, pos).float()
    if uncond is None or w == 1.0:
        return c
    u = logits_at(*uncond).float()
    return u + w * (c - u)


def transfer_schedule(block: int, steps: int) -> list[int]:
    """Tokens committed per step within a block (LLaDA ``get_num_transfer_tokens``): an even split,
    the remainder going to the first steps."""
    base, rem = divmod(block, steps)
    return [base + (1 if i < rem else 0) for i in range(steps)]


def _gather_set(x: torch.Tensor, pos: torch.Tensor, vals: torch.Tensor) -> None:
    x.scatter_(1, pos, vals)


@torch.no_grad()
def sample_text(
    logits_at,
    ids: torch.Tensor,
    keep: torch.Tensor,
    slots: torch.Tensor,
    *,
    steps: int,
    block_length: int,
    temperature: float,
    support: torch.Tensor,
    seeds: list[int],
    mask_id: int,
    cfg_weight: float = 1.0,
    uncond: tuple | None = None,
    record: bool = False,
):
    """Fill the masked answer ``slots`` (B, L) of ``ids``; returns the filled ids (B, S), and with
    ``record`` also the step at which each slot was committed (B, L) and the log-prob of the committed
    token under ``softmax(z / T)`` at that step (B, L) (the trajectory estimator recomputes these).

    ``support`` (V,) is added to the logits (-inf where a token may not be drawn). ``uncond`` is
    ``(ids_u, keep_u, slots_u)`` with the same slots (its answer region is kept in step with ``ids``).
    """
    B, L = slots.shape
    block_length = block_length or L
    if L % block_length or steps % (L // block_length) or steps < L // block_length:
        raise ValueError(
            f"text sampler: {L} slots in blocks of {block_length} need a step count that is a "
            f"multiple of {L // max(1, block_length)} (got {steps})"
        )
    dev = ids.device
    gens = generators(seeds, dev)
    x = ids.clone()
    xu = uncond[0].clone() if uncond is not None else None
    nb, spb = L // block_length, steps // (L // block_length)
    commit_at = torch.full((B, L), -1, dtype=torch.long, device=dev)
    commit_lp = torch.zeros((B, L), device=dev)
    t_global = 0
    for b in range(nb):
        in_block = torch.zeros(L, dtype=torch.bool, device=dev)
        in_block[b * block_length : (b + 1) * block_length] = True
        for n in transfer_schedule(block_length, spb):
            un = (xu, uncond[1], uncond[2]) if uncond is not None else None
            z = guided(logits_at, x, keep, slots, un, cfg_weight) + support.to(dev)
            probs = torch.softmax(z, -1)
            lps = torch.log_softmax(z / temperature, -1) if record and temperature > 0 else None
            masked = (x.gather(1, slots) == mask_id) & in_block
            cur = x.gather(1, slots)
            new = cur.clone()
            for r in range(B):
                zr = z[r] / temperature + gumbel(z[r].shape, gens[r], dev) if temperature > 0 else z[r]
                x0 = zr.argmax(-1)
                conf = probs[r].gather(-1, x0.unsqueeze(-1)).squeeze(-1)
                conf = torch.where(masked[r], conf, torch.full_like(conf, -math.inf))
                k = min(n, int(masked[r].sum()))
                if k:
                    pick = conf.topk(k).indices
                    new[r, pick] = x0[pick]
                    commit_at[r, pick] = t_global
                    if lps is not None:
                        commit_lp[r, pick] = lps[r, pick].gather(-1, x0[pick].unsqueeze(-1)).squeeze(-1)
            _gather_set(x, slots, new)
            if xu is not None:
                _gather_set(xu, uncond[2], new)
            t_global += 1
    return (x, commit_at, commit_lp) if record else x


@torch.no_grad()
def sample_image(
    logits_at,
    ids: torch.Tensor,
    keep: torch.Tensor,
    slots: torch.Tensor,
    *,
    steps: int,
    temperature: float,
    lay: TokenLayout,
    seeds: list[int],
    cfg_weight: float = 1.0,
    uncond: tuple | None = None,
    record: bool = False,
):
    """Fill the masked image-code ``slots`` (B, N) of ``ids``; returns code indices (B, N) in
    ``0 .. codebook-1``. ``uncond = (ids_u, keep_u, slots_u)``: the unconditional rows, whose image
    region is kept in step with ``ids``. With ``record`` also the commit step of every code (B, N) and
    its log-prob under ``softmax(z / T)`` at that step (B, N)."""
    if steps < 1 or not temperature > 0:
        raise ValueError(f"image sampler needs steps >= 1 and temperature > 0 (got {steps}, {temperature})")
    B, N = slots.shape
    dev = ids.device
    gens = generators(seeds, dev)
    x = ids.clone()
    xu = uncond[0].clone() if uncond is not None else None
    commit_at = torch.full((B, N), -1, dtype=torch.long, device=dev)
    commit_lp = torch.zeros((B, N), device=dev)
    for t in range(steps):
        un = (xu, uncond[1], uncond[2]) if uncond is not None else None
        z = guided(logits_at, x, keep, slots, un, cfg_weight)[..., lay.code_base : lay.code_end] / temperature
        logp_all = torch.log_softmax(z, -1)
        cur = x.gather(1, slots)
        masked = cur == lay.mask
        keep_n = math.floor(N * math.cos(math.pi / 2 * (t + 1) / steps))
        new = cur.clone()
        for r in range(B):
            drawn = (z[r] + gumbel(z[r].shape, gens[r], dev)).argmax(-1)
            lp = logp_all[r].gather(-1, drawn.unsqueeze(-1)).squeeze(-1)
            conf = lp + temperature * gumbel((N,), gens[r], dev)
            conf = torch.where(masked[r], conf, torch.full_like(conf, math.inf))
            n_masked = int(masked[r].sum())
            stay = max(0, min(keep_n, n_masked - 1))
            commit = masked[r].clone()
            if stay:
                commit[conf.topk(stay, largest=False).indices] = False
            new[r] = torch.where(commit, drawn + lay.code_base, cur[r])
            commit_at[r] = torch.where(commit, torch.full_like(commit_at[r], t), commit_at[r])
            commit_lp[r] = torch.where(commit, lp, commit_lp[r])
        _gather_set(x, slots, new)
        if xu is not None:
            _gather_set(xu, uncond[2], new)
    codes = x.gather(1, slots)
    if bool((codes == lay.mask).any()):
        raise RuntimeError("image sampler left masked codes (a bug: the last step commits every slot)")
    return (codes - lay.code_base, commit_at, commit_lp) if record else codes - lay.code_base
