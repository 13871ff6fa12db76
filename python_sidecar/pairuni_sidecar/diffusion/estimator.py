"""Per-token log-probs of a masked-diffusion rollout for GRPO: the one-step mean-field estimator of
d1 / dLLM (``DiffuGRPOTrainer``).

Given the final sequence ``[prompt | completion]``: every completion slot is masked, every prompt
position is masked with probability ``p_mask_prompt``, one forward runs, and the log-prob of
completion token i is ``log softmax(z_i / T)[x_i]`` over the support the sampler drew from (text:
no MASK, no image codes; image: the code range only), with ``z = u + w (c - u)`` when guidance enters
the log-prob pass (``uncond`` given).

The prompt mask of trajectory r is drawn from a generator seeded by ``(est_seed, r)``, where r is the
trajectory's index in its rollout batch and ``est_seed`` is sent by the trainer per (rollout batch,
inner iteration): old, current and reference passes of one inner iteration, in any micro-batching,
see the same masks, so the ratio is exactly 1 before the first update (with dropout off).
"""

from __future__ import annotations

import torch

from .samplers import row_seed


def prompt_masks(keep: torch.Tensor, maskable: torch.Tensor, seeds: list[int], p: float) -> torch.Tensor:
    """(B, S) bool: the prompt positions to mask, drawn per row over the row's own length only."""
    out = torch.zeros_like(maskable)
    if p <= 0:
        return out
    for r, s in enumerate(seeds):
        n = int(keep[r].sum())
        g = torch.Generator(device="cpu").manual_seed(int(s))
        u = torch.rand(n, generator=g).to(keep.device)
        out[r, :n] = (u < p) & maskable[r, :n]
    return out


def estimator_seeds(est_seed: int, rows: torch.Tensor) -> list[int]:
    return [row_seed(est_seed, int(r)) for r in rows.tolist()]


def masked_inputs(
    ids: torch.Tensor,
    keep: torch.Tensor,
    slots: torch.Tensor,
    maskable: torch.Tensor,
    seeds: list[int],
    p: float,
    mask_id: int,
) -> torch.Tensor:
    """The estimator's input: completion slots all masked, prompt positions masked with probability p."""
    x = ids.clone()
    x[prompt_masks(keep, maskable, seeds, p)] = mask_id
    x.scatter_(1, slots, torch.full_like(slots, mask_id))
    return x


def one_step_logprobs(
    logits_at,
    x: torch.Tensor,
    keep: torch.Tensor,
    slots: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float,
    support: torch.Tensor | slice,
    cfg_weight: float = 1.0,
    uncond: tuple | None = None,
) -> torch.Tensor:
    """(B, L) log-probs of ``targets`` (token ids, or code indices when ``support`` is a slice) at the
    masked ``slots`` of the estimator input ``x``; carries the autograd graph when grad is enabled."""
    c = logits_at(x, keep, slots).float()
    if uncond is not None and cfg_weight != 1.0:
        u = logits_at(*uncond).float()
        z = u + cfg_weight * (c - u)
    else:
        z = c
    z = z[..., support] if isinstance(support, slice) else z + support.to(z.device)
    return torch.log_softmax(z / temperature, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def trajectory_logprobs(
    logits_at,
    ids: torch.Tensor,
    keep: torch.Tensor,
    slots: torch.Tensor,
    tokens: torch.Tensor,
    targets: torch.Tensor,
    commit_at: torch.Tensor,
    *,
    steps: int,
    mask_id: int,
    temperature: float,
    support: torch.Tensor | slice,
    cfg_weight: float = 1.0,
    uncond: tuple | None = None,
) -> torch.Tensor:
    """The second estimator: score the recorded unmask trajectory step by step. At step t the input shows
    the slots committed before t (their ``tokens``, vocabulary ids) and masks the rest, as the sampler saw it;
    slot i's log-prob is that of ``targets`` (ids, or code indices with a slice ``support``) at its commit
    step. ``steps`` forwards (x2 with guidance), no randomness: ``est_seed`` plays no part. It omits the
    probability of *which* slots were committed (the confidence ranking), like upstream trajectory scorers.
    ``uncond = (ids_u, keep_u, slots_u)`` is kept in step with the trajectory."""
    out = torch.zeros(slots.shape, device=commit_at.device)
    for t in range(int(steps)):
        now = commit_at == t
        if not bool(now.any()):
            continue
        shown = torch.where(commit_at < t, tokens, torch.full_like(tokens, mask_id))
        x = ids.scatter(1, slots, shown)
        un = None
        if uncond is not None and cfg_weight != 1.0:
            un = (uncond[0].scatter(1, uncond[2], shown), uncond[1], uncond[2])
        lp = one_step_logprobs(
            logits_at,
            x,
            keep,
            slots,
            targets,
            temperature=temperature,
            support=support,
            cfg_weight=cfg_weight,
            uncond=un,
        )
        out = torch.where(now.to(out.device), lp, out)
    return out
