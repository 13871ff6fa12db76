"""One rank of the data-parallel checks (run by torchrun from test_dist.py; not a test itself).

The step's global batch is fixed in two parts (whole groups each); part p is rolled out with seed
SEED + 10 * step + p, so the batch does not depend on the world size. At world 1 the one rank rolls
out both parts and updates over both; at world 2 rank r rolls out part r under FSDP2 and the update's
gradients are synchronised by torch.distributed. Rank r writes what it saw to OUT/<mode>-world<N>-rank<r>.pt;
the test compares worlds.

    torchrun --nproc-per-node N tests/py/dist_worker.py MODE[+MODE...] MODEL_DIR IMAGE OUT [CKPT]

Several modes joined by ``+`` run one after another in the same ranks (one torch import per rank
instead of one per mode; each mode loads its own policy and seeds itself, and the first one runs as
in a fresh process). MODE:
- ``parity``: 3 PairGRPO updates; the rollouts seen and the full parameters after them.
- ``save``: 2 updates, then ``save_policy(CKPT)`` and ``export_policy(CKPT-hf)``, then the 3rd update.
- ``resume``: ``load_policy(resume_dir=CKPT)`` (any world size), then the 3rd update.
- ``refkl``: beta > 0 (a reference model) and uneven parts: part 0 has two prompts per side, part 1
  one, so the ranks run different numbers of micro-batches; 2 updates.
"""

from __future__ import annotations

import os
import random
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1)

from pairuni_sidecar import dist  # noqa: E402
from pairuni_sidecar.adapters import GenItem, LoadSpec, UndItem  # noqa: E402
from pairuni_sidecar.contract import GenSampling, UndSampling  # noqa: E402
from pairuni_sidecar.policy import LossCfg, OptimCfg, SideInput, export_policy, load_policy, save_policy  # noqa: E402
from pairuni_sidecar.policy.checkpoint import _optim_state  # noqa: E402

PARTS = 2
SEED = 11
OPTIM = OptimCfg(lr=5e-3, micro_batch=2)


def group_adv(r: torch.Tensor, k: int) -> torch.Tensor:
    g = r.view(-1, k)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).view(-1)


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every rank (a collective for a DTensor: every rank calls it in one order)."""
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def rng_probe() -> dict:
    """The next draws of every RNG a checkpoint restores, without consuming them."""
    st = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    out = {
        "torch": torch.rand(4),
        "numpy": torch.tensor(np.random.rand(4)),
        "python": torch.tensor([random.random() for _ in range(4)]),
    }
    torch.set_rng_state(st[0])
    np.random.set_state(st[1])
    random.setstate(st[2])
    return out


def snapshot(policy) -> dict:
    params = {n: full(p) for n, p in policy.adapter.model.named_parameters()}
    exp_avg = {n: full(s["exp_avg"]) for n, s in _optim_state(policy).items()}
    return {"params": params, "exp_avg": exp_avg, "rng": rng_probe(), "optimizer_step": policy.step_count}


def run_step(policy, w, step: int, items, loss: LossCfg) -> dict:
    adapter = policy.adapter
    und_items, gen_items = items
    mine = list(range(w.rank, PARTS, w.size))  # the parts this rank rolls out
    seen, inputs_u, inputs_g = {}, [], []
    for p in mine:
        with adapter.gathered():
            ub = adapter.und_rollout(und_items[p], 2, UndSampling(max_new_tokens=4, seed=SEED + 10 * step + p))
            gb = adapter.gen_rollout(gen_items[p], 2, GenSampling(cfg_weight=2.0, seed=SEED + 10 * step + p))
        seen[f"s{step}p{p}"] = {
            "und_ids": ub.out_ids,
            "und_logp": ub.old_logp,
            "gen_ids": gb.out_ids,
            "gen_logp": gb.old_logp,
        }
        # rewards that vary inside groups, from the sampled tokens (deterministic given the rollout)
        ru = (ub.out_ids[:, 0] % 3).float()
        rg = (gb.out_ids[:, :4].sum(-1) % 5).float()
        inputs_u.append(SideInput(ub, group_adv(ru, 2)))
        inputs_g.append(SideInput(gb, group_adv(rg, 2)))
    metrics = policy.update(inputs_u + inputs_g, loss, est_seed=step)
    seen[f"m{step}"] = {
        k: torch.tensor(v)
        for k, v in metrics.items()
        if k in ("loss", "grad_norm", "update_tokens") or k.endswith("/kl_ref")
    }
    return seen


def main(modes: str, model_dir: str, image: str, out: str, ckpt: str | None = None) -> None:
    w = dist.init_world(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    for mode in modes.split("+"):
        run_mode(w, mode, model_dir, image, out, ckpt)
        dist.barrier()
    dist.exit_process(0)


def run_mode(w, mode: str, model_dir: str, image: str, out: str, ckpt: str | None) -> None:
    torch.manual_seed(0)
    und_items = [
        [UndItem(image, "what shape? A"), UndItem(image, "what colour? B")],
        [UndItem(image, "how many? C"), UndItem(image, "where? D")],
    ]
    gen_items = [[GenItem("a red circle"), GenItem("two squares")], [GenItem("a blue star"), GenItem("one dot")]]
    loss = LossCfg(agg="seq_mean", norm="side")
    spec = LoadSpec(path=model_dir, device="auto")
    if mode == "refkl":
        und_items[1], gen_items[1] = und_items[1][:1], gen_items[1][:1]
        loss = LossCfg(agg="seq_mean", norm="side", beta=0.1)
        spec = LoadSpec(path=model_dir, device="auto", ref_model_dir=model_dir)
    items = (und_items, gen_items)
    res: dict = {"world": w.size}
    if mode == "resume":
        t0 = time.perf_counter()
        policy = load_policy("janus", spec, OPTIM, resume_dir=ckpt)
        res["load_s"] = time.perf_counter() - t0  # reported by hand, never asserted (no timed tests)
        res["loaded"] = snapshot(policy)
        steps = [2]
    else:
        policy = load_policy("janus", spec, OPTIM)
        res["init"] = {n: full(p) for n, p in policy.adapter.model.named_parameters()}
        steps = {"parity": [0, 1, 2], "save": [0, 1], "refkl": [0, 1]}[mode]
    seen = {}
    for step in steps:
        seen.update(run_step(policy, w, step, items, loss))
    if mode == "save":
        res["saved"] = snapshot(policy)
        t0 = time.perf_counter()
        save_policy(policy, "janus", ckpt)
        t1 = time.perf_counter()
        export_policy(policy, ckpt + "-hf")
        res["save_s"], res["export_s"] = t1 - t0, time.perf_counter() - t1
        seen.update(run_step(policy, w, 2, items, loss))
    res["seen"] = seen
    res["params"] = {n: full(p) for n, p in policy.adapter.model.named_parameters()}
    res["sharded"] = hasattr(next(policy.adapter.model.parameters()), "full_tensor")
    torch.save(res, os.path.join(out, f"{mode}-world{w.size}-rank{w.rank}.pt"))


if __name__ == "__main__":
    main(*sys.argv[1:])
