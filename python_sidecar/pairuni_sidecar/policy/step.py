"""The generic policy update: one optimizer step of the clipped surrogate over both sides.

``Policy`` owns the adapter and an AdamW optimizer over the adapter's trainable fp32 master weights.
``Policy.update`` runs gradient accumulation over micro-batches of trajectories (und side first, then
gen), clips the global gradient norm, steps the optimizer, and returns per-side metrics. Nothing is
applied when the gradient is not finite: the step is refused with a typed error and the weights and
optimizer state stay as they were.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .. import dist
from ..adapters.base import PolicyAdapter, RolloutBatch, SFTExample
from ..contract.generated import LoadOptim
from ..errors import BadRequest, NonFiniteError
from .loss import LossCfg, LossConfigError, clipped_surrogate, side_totals, traj_coefficients


#: The optimizer record of ``train.load`` (generated from src/contract: lr, betas, eps, weight_decay,
#: max_grad_norm (<= 0: no clipping), micro_batch).
OptimCfg = LoadOptim


@dataclass
class SideInput:
    batch: RolloutBatch
    adv: torch.Tensor  # (B,) float32, already group-normalised and pair-weighted


@dataclass
class _Acc:
    loss: float = 0.0
    tokens: float = 0.0
    clipped: float = 0.0
    ratio_sum: float = 0.0
    ratio_min: float = math.inf
    ratio_max: float = -math.inf
    kl_old: float = 0.0
    kl_ref: float = 0.0
    trajs: int = 0
    skipped: int = 0
    extra: dict = field(default_factory=dict)


class Policy:
    def __init__(self, adapter: PolicyAdapter, optim: OptimCfg | None = None) -> None:
        self.adapter = adapter
        self.optim_cfg = (optim or OptimCfg()).validate("optim")
        self.world = dist.current()
        if self.world.distributed and not getattr(adapter, "sharded", False):
            adapter.shard()  # before the optimizer: it must hold the sharded parameters
            adapter.sharded = True
        named = adapter.trainable_parameters()
        if not named:
            raise BadRequest("the adapter exposes no trainable parameters")
        self.param_names = [n for n, _ in named]
        self.params = [p for _, p in named]
        for n, p in named:
            if p.dtype != torch.float32:
                raise BadRequest(
                    f"trainable parameter {n} is {p.dtype}; master weights must be fp32 "
                    "(lr 1e-6 updates vanish in bf16)"
                )
        # Trainable tensors outside FSDP2's units (LoRA factors held beside the model) are whole on every
        # rank: their gradients are averaged over the world by hand, as FSDP2 averages the shards'.
        self.replicated = [p for p in self.params if not dist.is_sharded(p)] if self.world.distributed else []
        c = self.optim_cfg
        self.optimizer = torch.optim.AdamW(
            self.params, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay
        )
        self.step_count = 0

    # -- reference log-probs (beta > 0) ----------------------------------------------------------
    @torch.no_grad()
    def ref_logps(self, batches: list[RolloutBatch], micro_batch: int, est_seed: int = 0) -> list[torch.Tensor]:
        """Reference log-probs of each batch, computed once per batch (exact log-probs) or once per
        estimator seed and cached on the batch. With several ranks every rank runs the same number of
        reference forwards per batch (the busiest rank's; the extra ones are discarded), as the update
        pads its micro-batches: ranks hold parts of different sizes, and a reference model that runs a
        collective in its forward (FSDP2 all-gathers) would otherwise wait forever on the rank that
        stopped early. Cached batches count 0 forwards and are padded like the others."""
        seeded = self.adapter.seeded_logprobs
        seed = int(est_seed) if seeded else 0

        def cached(b: RolloutBatch) -> torch.Tensor | None:
            return b.ref_logp_by_seed.get(seed) if seeded else b.ref_logp

        plans = [
            []
            if cached(b) is not None
            else [torch.arange(s, min(b.size, s + micro_batch)) for s in range(0, b.size, micro_batch)]
            for b in batches
        ]
        want = dist.all_reduce_max([len(p) for p in plans])  # the plans themselves at world 1
        for b, plan, n in zip(batches, plans, want):
            parts = [
                self.adapter.token_logprobs(b, rows, est_seed=seed, grad=False, ref=True)[0].float().cpu()
                for rows in plan
            ]
            for _ in range(n - len(plan)):  # padding forwards for the collectives: results unused
                self.adapter.token_logprobs(
                    b, torch.arange(min(b.size, micro_batch)), est_seed=seed, grad=False, ref=True
                )
            if plan:
                ref = torch.cat(parts, 0)
                if seeded:
                    b.ref_logp_by_seed[seed] = ref
                else:
                    b.ref_logp = ref
        return [cached(b) for b in batches]

    # -- the PairGRPO update ---------------------------------------------------------------------
    def update(
        self,
        sides: list[SideInput],
        cfg: LossCfg,
        *,
        est_seed: int = 0,
        micro_batch: int | None = None,
        grad_cosine: bool = False,
        check: Callable[[], None] | None = None,
    ) -> dict[str, float]:
        """One optimizer step on ``sides`` (each a rollout batch with its advantages)."""
        cfg.validate("loss")
        micro_batch = micro_batch or self.optim_cfg.micro_batch
        if not sides:
            raise BadRequest("update needs at least one side")
        if micro_batch < 1:
            raise BadRequest(f"micro_batch must be >= 1, got {micro_batch}")
        names = [s.batch.side for s in sides]
        if names != sorted(names, key=("und", "gen").index):
            raise BadRequest(f"update takes und batches before gen batches, got {names}")
        distributed = self.world.distributed
        if grad_cosine and distributed:
            raise BadRequest("grad_cosine is computed on one rank only; turn it off with more than one rank")
        for s in sides:
            adv = s.adv
            if adv.ndim != 1 or adv.shape[0] != s.batch.size:
                raise BadRequest(
                    f"{s.batch.side}: advantages must have shape ({s.batch.size},), got {tuple(adv.shape)}"
                )
            if not bool(torch.isfinite(adv).all()):
                raise NonFiniteError(f"{s.batch.side}: advantages contain NaN/inf; no update was applied")
        dev = self.adapter.device
        t0 = time.perf_counter()
        masks = [s.batch.out_mask for s in sides]
        items = [int(s.batch.group.unique().numel()) for s in sides]
        # Global normalisation: each rank holds whole groups of the step's batch, and the coefficients
        # use the world's trajectory, token and item counts, so the ranks' gradients sum to one process's.
        local = side_totals(masks, names, items)
        keys = sorted(local)
        summed = dist.all_reduce_sum([v for k in keys for v in local[k]])
        totals = {k: (int(summed[3 * i]), summed[3 * i + 1], int(summed[3 * i + 2])) for i, k in enumerate(keys)}
        if cfg.agg == "token_sum" and cfg.norm == "side" and min(t[2] for t in totals.values()) < 1:
            raise LossConfigError(
                f"agg='token_sum' with norm='side' needs a positive item count per side, got {totals}"
            )
        coefs = traj_coefficients(masks, cfg, sides=names, totals=totals)
        # per batch, not per side name: with data parallelism a rank holds several parts of one side
        refs = self.ref_logps([s.batch for s in sides], micro_batch, est_seed) if cfg.beta > 0 else None
        olds = [s.batch.old_logp_for(est_seed) for s in sides]
        self.optimizer.zero_grad(set_to_none=True)
        self.adapter.train_mode(True)
        accs: dict[str, _Acc] = {}
        first_grads: list[torch.Tensor] | None = None
        plans = []
        for s in sides:
            rows_all = torch.arange(s.batch.size)
            if cfg.beta == 0:
                # zero-advantage trajectories (e.g. zero-variance groups) add nothing to the gradient
                rows_all = rows_all[s.adv != 0]
            plans.append([rows_all[i : i + micro_batch] for i in range(0, rows_all.numel(), micro_batch)])
        # FSDP2 gathers and reduces inside every forward/backward: each rank runs as many micro-batches
        # as the busiest one; the extra ones carry coefficient 0 (they change no gradient).
        want = dist.all_reduce_max([len(p) for p in plans]) if distributed else [len(p) for p in plans]
        try:
            for si, s in enumerate(sides):
                acc = accs.setdefault(s.batch.side, _Acc())
                b, adv = s.batch, s.adv.float()
                acc.trajs += b.size
                acc.skipped += b.size - sum(int(r.numel()) for r in plans[si])
                mbs = plans[si] + [None] * (want[si] - len(plans[si]))
                for rows in mbs:
                    if check is not None:
                        check()
                    coef = coefs[si]
                    if rows is None:  # a padding micro-batch for the collectives
                        rows, coef = torch.arange(min(b.size, micro_batch)), torch.zeros_like(coefs[si])
                    logp, mask = self.adapter.token_logprobs(b, rows, est_seed=est_seed, grad=True)
                    ref = refs[si][rows].to(dev) if refs is not None else None
                    loss, st = clipped_surrogate(
                        logp, olds[si][rows].to(dev), adv[rows].to(dev), mask, coef[rows].to(dev), cfg, ref
                    )
                    # the coefficients are world-global, so the ranks' losses add up to the whole
                    # step's; FSDP2 averages the gradients over the ranks, hence the world size
                    (loss * self.world.size if distributed else loss).backward()
                    if not bool(coef[rows].any()):
                        continue  # padding: no metrics
                    acc.loss += float(loss.detach())
                    acc.tokens += float(st["tokens"])
                    acc.clipped += float(st["clipped"])
                    acc.ratio_sum += float(st["ratio_sum"])
                    acc.ratio_min = min(acc.ratio_min, float(st["ratio_min"]))
                    acc.ratio_max = max(acc.ratio_max, float(st["ratio_max"]))
                    acc.kl_old += float(st["kl_old_sum"])
                    acc.kl_ref += float(st["kl_ref_sum"])
                if grad_cosine and si == 0 and len(sides) == 2:
                    first_grads = [
                        p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self.params
                    ]
        finally:
            self.adapter.train_mode(False)
        out: dict[str, float] = {}
        if first_grads is not None:
            dot = n1 = n2 = 0.0
            for g1, p in zip(first_grads, self.params):
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                g2 = g - g1
                dot += float((g1.double() * g2.double()).sum())
                n1 += float(g1.double().pow(2).sum())
                n2 += float(g2.double().pow(2).sum())
            out["grad_cos"] = dot / math.sqrt(n1 * n2) if n1 > 0 and n2 > 0 else 0.0
        max_norm = self.optim_cfg.max_grad_norm
        grads = [p for p in self.params if p.grad is not None]
        norm = self._clip(grads, max_norm)
        if not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"gradient norm is {norm}; the step was not applied (weights unchanged)")
        self.optimizer.step()
        self.adapter.after_step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        tokens = 0.0
        for side, a in accs.items():
            tokens += a.tokens
            out[f"{side}/loss"] = a.loss
            out[f"{side}/tokens"] = a.tokens
            out[f"{side}/clip_frac"] = a.clipped / a.tokens if a.tokens else 0.0
            out[f"{side}/ratio_mean"] = a.ratio_sum / a.tokens if a.tokens else 1.0
            out[f"{side}/ratio_min"] = a.ratio_min if a.tokens else 1.0
            out[f"{side}/ratio_max"] = a.ratio_max if a.tokens else 1.0
            out[f"{side}/kl_old"] = a.kl_old / a.tokens if a.tokens else 0.0
            if cfg.beta > 0:
                out[f"{side}/kl_ref"] = a.kl_ref / a.tokens if a.tokens else 0.0
            out[f"{side}/skipped"] = float(a.skipped)
        out["loss"] = sum(a.loss for a in accs.values())
        out["grad_norm"] = norm
        out["lr"] = float(self.optimizer.param_groups[0]["lr"])
        out["update_tokens"] = tokens
        out["update_s"] = time.perf_counter() - t0
        out["optimizer_step"] = float(self.step_count)
        return out

    def _clip(self, grads: list[torch.Tensor], max_norm: float) -> float:
        """Clips the global gradient norm (over the world's shards with FSDP2) and returns it."""
        if self.world.distributed:
            return self._clip_world(max_norm)
        if not grads:
            return 0.0
        return float(torch.nn.utils.clip_grad_norm_(grads, max_norm if max_norm > 0 else math.inf))

    def _clip_world(self, max_norm: float) -> float:
        """The world's gradient norm: the shards' squares summed over the ranks plus the replicated
        tensors' once (after averaging them), then the same scaling as ``clip_grad_norm_``. Every rank
        takes part, with or without a gradient (each holds a shard of every FSDP2 parameter)."""
        rep = [p.grad for p in self.replicated if p.grad is not None]
        dist.all_reduce_mean_(rep)
        local = sum(
            float(p.grad.to_local().double().pow(2).sum())
            for p in self.params
            if p.grad is not None and dist.is_sharded(p.grad)
        )
        norm = math.sqrt(dist.all_reduce_sum([local])[0] + sum(float(g.double().pow(2).sum()) for g in rep))
        if max_norm > 0 and math.isfinite(norm):
            coef = min(1.0, max_norm / (norm + 1e-6))
            if coef < 1.0:
                for p in self.params:
                    if p.grad is not None:
                        p.grad.mul_(coef)
        return norm

    # -- supervised step (SFT families such as Bagel use only this) ------------------------------
    def sft_step(self, examples: list[SFTExample], seed: int | None = None) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        self.adapter.train_mode(True)
        try:
            # With a seed the step's randomness derives from (run seed, step), so a resume repeats it.
            forked = (
                contextlib.nullcontext()
                if seed is None
                else torch.random.fork_rng(devices=[self.adapter.device] if self.adapter.device.type == "cuda" else [])
            )
            with forked:
                if seed is not None:
                    torch.manual_seed(seed)
                losses = self.adapter.sft_loss(examples)
            total = self.adapter.combine_sft_losses(losses)
            # FSDP2 averages the ranks' gradients: an adapter that splits the step's examples over the
            # ranks returns world x its share of the step's loss (Bagel), one that does not the whole loss
            total.backward()
        finally:
            self.adapter.train_mode(False)
        max_norm = self.optim_cfg.max_grad_norm
        norm = self._clip([p for p in self.params if p.grad is not None], max_norm)
        if not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"SFT gradient norm is {norm}; the step was not applied")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.adapter.after_step()
        self.step_count += 1
        # the ranks' values averaged: the whole step's loss either way (identity at world 1)
        names = [f"{k}/sft_loss" for k in losses] + ["loss"]
        vals = dist.all_reduce_sum([float(v.detach()) for v in losses.values()] + [float(total.detach())])
        return {
            **{k: v / self.world.size for k, v in zip(names, vals)},
            "grad_norm": norm,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "optimizer_step": self.step_count,
        }
