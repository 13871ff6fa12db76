"""Bagel's flow-matching sampler maths, independent of the model (used by ``adapters/bagel.py``).

Conventions are upstream Bagel's (``modeling/bagel/bagel.py::generate_image``): ``x_t = (1 - t) x_0 + t eps``,
the model predicts the velocity ``v = eps - x_0`` (pointing from data to noise), and the sampler walks a
time grid from t = 1 (noise) to t = 0 (data):

- grid: ``num_timesteps`` points ``linspace(1, 0)``, each shifted ``s t / (1 + (s - 1) t)`` (s = 3 at
  inference); step k goes from ``t_k`` to ``t_{k+1}`` with ``dt_k = t_k - t_{k+1} > 0``;
- ODE (Euler) step: ``x_{k+1} = x_k - v dt_k``;
- text guidance at steps with ``lo < t_k <= hi``: ``g = u + w (c - u)`` (c: conditional, u: prompt-free
  velocity), then renormalised ``g * clamp(|c| / (|g| + 1e-8), renorm_min, 1)`` with the norm over the
  sample's whole latent (``global``) or per latent token (``channel``); elsewhere ``c`` alone;
- SDE step (Flow-GRPO, Liu et al. 2025, "the ODE step plus noise of a declared scale"): with
  ``sigma_k = a sqrt(t_k / (1 - t_k))`` (``1 - t_1`` in place of ``1 - t_0 = 0`` at the first step),
  ``mean = x_k - v dt_k - sigma_k^2 dt_k / (2 t_k) (x_k + (1 - t_k) v)`` (the drift that keeps the
  marginals of the ODE; ``x + (1 - t) v`` is the model's noise estimate) and
  ``x_{k+1} = mean + sigma_k sqrt(dt_k) z``, z ~ N(0, I);
- a step's log-prob is the Gaussian log-density of ``x_{k+1}`` under ``N(mean, sigma_k^2 dt_k I)``
  averaged over the latent's dimensions (Flow-GRPO's per-dimension mean, so ratios and clipping act on
  a per-dimension scale whatever the image size).
"""

from __future__ import annotations

import math

import torch


def time_grid(num_timesteps: int, shift: float) -> torch.Tensor:
    """The shifted time grid from 1 to 0 (float64 on the CPU; ``num_timesteps`` points)."""
    t = torch.linspace(1.0, 0.0, int(num_timesteps), dtype=torch.float64)
    return shift * t / (1 + (shift - 1) * t)


def guidance_on(t: float, interval) -> bool:
    """Upstream's guidance interval test: ``lo < t <= hi``."""
    return float(interval[0]) < t <= float(interval[1])


def guided_velocity(c: torch.Tensor, u: torch.Tensor, w: float, renorm_min: float, renorm_type: str) -> torch.Tensor:
    """``u + w (c - u)`` renormalised towards the conditional velocity's norm. c, u: (B, N, D)."""
    g = u + w * (c - u)
    if renorm_type == "global":
        nc, ng = c.flatten(1).norm(dim=1)[:, None, None], g.flatten(1).norm(dim=1)[:, None, None]
    else:
        nc, ng = c.norm(dim=-1, keepdim=True), g.norm(dim=-1, keepdim=True)
    return g * (nc / (ng + 1e-8)).clamp(min=renorm_min, max=1.0)


def sde_sigma(grid: torch.Tensor, k: int, noise_level: float) -> float:
    """Flow-GRPO's sigma_k at step k of ``grid``."""
    t = float(grid[k])
    one_minus = 1.0 - (float(grid[1]) if t == 1.0 else t)
    return float(noise_level) * math.sqrt(t / one_minus)


def sde_mean(x: torch.Tensor, v: torch.Tensor, t: float, dt: float, sigma: float) -> torch.Tensor:
    """Mean of the SDE step from time t over dt (> 0, towards the data); sigma = 0 gives the Euler step."""
    return x - v * dt - (sigma * sigma * dt / (2 * t)) * (x + (1 - t) * v)


def step_logp(x_next: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """Per-row mean over dimensions of log N(x_next; mean, std^2). x_next, mean: (B, ...) -> (B,)."""
    z = (x_next.detach() - mean) / std
    lp = -0.5 * z * z - math.log(std) - 0.5 * math.log(2 * math.pi)
    return lp.flatten(1).mean(1)


__all__ = ["guidance_on", "guided_velocity", "sde_mean", "sde_sigma", "step_logp", "time_grid"]
