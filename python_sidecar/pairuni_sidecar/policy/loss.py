"""The clipped GRPO surrogate on per-token log-probs (PairUni eq. 1-4), model-agnostic.

For trajectory i with advantage A_i (already group-normalised and multiplied by the pair weight w_p
in the controller) and tokens t in its mask:

    rho_t     = exp(logp_t - old_logp_t)
    L_clip    = min(rho_t * A_i, clip(rho_t, 1 - eps_low, 1 + eps_high) * A_i)
    kl_t      = exp(ref_t - logp_t) - (ref_t - logp_t) - 1            (k3 estimator, only when beta > 0)
    loss      = sum_i  c_i * sum_t mask_it * (-L_clip + beta * kl_t)

The per-trajectory coefficient ``c_i`` fixes the aggregation and is computed once for the whole step,
so splitting a step into micro-batches (gradient accumulation) does not change the result:

- ``seq_mean`` (GRPO, default): c_i = 1 / (n_group * |o_i|)  - token mean inside a sequence, mean over sequences
- ``token_mean`` (T2I-R1): c_i = 1 / (tokens in the normalisation group)
- ``token_sum`` (the paper's equations as printed): no length normalisation, Σ_t over each trajectory's
  tokens. Eq. 1 is E_τ[Σ_t L_clip], so with ``norm="batch"`` c_i = 1 / (trajectories in the batch);
  eq. 2/4 are E_p[Σ_{τ∈p^(u)} Σ_t + Σ_{τ∈p^(g)} Σ_t], so with ``norm="side"`` c_i = 1 / (items, i.e.
  pairs, on the trajectory's side): a pair's K trajectories are summed, not averaged.

where the normalisation group is each side separately (``norm="side"``: L = L_und + L_gen, eq. 2/4) or
the whole mixed batch (``norm="batch"``: one expectation over all trajectories, eq. 1). The paper's
eq. 1-4 print Σ_t without 1/|o|, i.e. ``token_sum``; ``seq_mean`` is the GRPO implementation practice
(DeepSeekMath's 1/|o_i| Σ_t) the paper builds on, kept as the default.
"""

from __future__ import annotations

import torch

from ..contract.generated import UpdateLoss
from ..errors import BadRequest


class LossConfigError(BadRequest):
    """A loss setting out of range; the message names it."""


#: The loss record of ``train.update`` (generated from src/contract: eps_low, eps_high, beta, agg, norm).
LossCfg = UpdateLoss


def side_totals(
    masks: list[torch.Tensor], sides: list[str], items: list[int] | None = None
) -> dict[str, tuple[int, float, int]]:
    """(trajectories, scored tokens, items) per side name over the given (B, L) masks (items: 0 when not given)."""
    out: dict[str, tuple[int, float, int]] = {}
    for i, (m, side) in enumerate(zip(masks, sides)):
        n, t, k = out.get(side, (0, 0.0, 0))
        out[side] = (n + int(m.shape[0]), t + float(m.sum()), k + (items[i] if items is not None else 0))
    return out


def traj_coefficients(
    masks: list[torch.Tensor],
    cfg: LossCfg,
    items: list[int] | None = None,
    *,
    sides: list[str] | None = None,
    totals: dict[str, tuple[int, float, int]] | None = None,
) -> list[torch.Tensor]:
    """One coefficient per trajectory for each (B, L) mask, per the aggregation rules above.

    ``items`` (the number of items, i.e. groups, of each mask) is needed by ``token_sum`` with ``norm="side"``.
    ``sides`` names each mask's side (default: each mask is its own side); several masks of one side
    share its normalisation group. ``totals`` are the groups' (trajectories, tokens, items) over the whole
    step: with data parallelism, the world's sums (each rank holds part of the batch), so the ranks'
    losses add up to the one-process loss. Default: the counts of ``masks``.
    """
    sides = sides if sides is not None else [str(i) for i in range(len(masks))]
    if totals is None:
        if (
            cfg.agg == "token_sum"
            and cfg.norm == "side"
            and (items is None or len(items) != len(masks) or min(items, default=1) < 1)
        ):
            raise LossConfigError(f"agg='token_sum' with norm='side' needs a positive item count per side, got {items}")
        totals = side_totals(masks, sides, items)
    lens = [m.sum(-1).to(torch.float64) for m in masks]
    if cfg.norm == "batch":
        allg = tuple(sum(v[j] for v in totals.values()) for j in range(3))
        groups = [allg] * len(lens)
    else:
        groups = [totals[s] for s in sides]
    out = []
    for x, (n, tokens, n_items) in zip(lens, groups):
        if cfg.agg == "seq_mean":
            c = torch.where(x > 0, 1.0 / (n * x.clamp(min=1)), torch.zeros_like(x))
        elif cfg.agg == "token_mean":
            c = torch.full_like(x, 1.0 / tokens if tokens > 0 else 0.0)
        else:  # token_sum: E over trajectories (eq. 1) or over pairs (eq. 2/4) of Σ_t
            c = torch.full_like(x, 1.0 / (n if cfg.norm == "batch" else n_items))
        out.append(c.to(torch.float32))
    return out


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    coef: torch.Tensor,
    cfg: LossCfg,
    ref_logp: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss contribution of a (micro-)batch and detached per-batch sums for metrics.

    logp/old_logp/mask: (b, L); adv/coef: (b,). Returns ``(loss, stats)`` where ``stats`` holds sums
    over masked tokens (``tokens``, ``clipped``, ``ratio_sum``, ``kl_old_sum``, ``kl_ref_sum``) and
    the min/max ratio, so callers can aggregate across micro-batches exactly.
    """
    m = mask.to(logp.dtype)
    log_ratio = (logp - old_logp) * m
    ratio = torch.exp(log_ratio)
    a = adv.to(logp.dtype).unsqueeze(-1)
    unclipped = ratio * a
    clipped = torch.clamp(ratio, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high) * a
    per_tok = -torch.minimum(unclipped, clipped)
    kl_ref = None
    if cfg.beta > 0:
        if ref_logp is None:
            raise LossConfigError("beta > 0 needs reference log-probs (load a reference model)")
        d = (ref_logp - logp) * m
        kl_ref = torch.exp(d) - d - 1
        per_tok = per_tok + cfg.beta * kl_ref
    loss = (per_tok * m * coef.to(logp.dtype).unsqueeze(-1)).sum()
    with torch.no_grad():
        mb = mask.bool()
        is_clipped = ((ratio > 1 + cfg.eps_high) & (a > 0)) | ((ratio < 1 - cfg.eps_low) & (a < 0))
        r = ratio[mb]
        stats = {
            "tokens": mb.sum().to(torch.float64),
            "clipped": (is_clipped & mb).sum().to(torch.float64),
            "ratio_sum": r.sum().to(torch.float64),
            "ratio_min": r.min() if r.numel() else torch.tensor(1.0),
            "ratio_max": r.max() if r.numel() else torch.tensor(1.0),
            # k3 estimate of KL(pi_old || pi_theta) from tokens sampled by pi_old: a drift gauge for mu > 1
            "kl_old_sum": ((ratio - 1 - log_ratio) * m).sum().to(torch.float64),
            "kl_ref_sum": (kl_ref * m).sum().to(torch.float64)
            if kl_ref is not None
            else torch.zeros((), dtype=torch.float64),
        }
    return loss, stats
