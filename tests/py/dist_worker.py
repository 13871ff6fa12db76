"""One rank of the data-parallel parity check (run by torchrun from test_dist.py; not a test itself).

The step's global batch is fixed in two parts (whole groups each); part p is rolled out with seed
SEED + p, so the batch does not depend on the world size. At world 1 the one rank rolls out both parts
and updates over both; at world 2 rank r rolls out part r under FSDP2 and the update's gradients are
synchronised by torch.distributed. Rank 0 writes the rollouts it saw and the full parameters after
STEPS PairGRPO updates to OUT/world<N>-rank<r>.pt; the test compares worlds.

    torchrun --nproc-per-node N tests/py/dist_worker.py MODEL_DIR IMAGE OUT
"""
from __future__ import annotations

import os
import sys

import torch

torch.set_num_threads(1)

from pairuni_sidecar import dist  # noqa: E402
from pairuni_sidecar.adapters import GenItem, LoadSpec, UndItem, load_adapter  # noqa: E402
from pairuni_sidecar.contract import GenSampling, UndSampling  # noqa: E402
from pairuni_sidecar.policy import LossCfg, OptimCfg, Policy, SideInput  # noqa: E402

PARTS = 2
STEPS = 3
SEED = 11


def group_adv(r: torch.Tensor, k: int) -> torch.Tensor:
    g = r.view(-1, k)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).view(-1)


def main(model_dir: str, image: str, out: str) -> None:
    w = dist.init_world(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    torch.manual_seed(0)
    adapter = load_adapter("janus", LoadSpec(path=model_dir, device="auto"))
    init = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
    policy = Policy(adapter, OptimCfg(lr=5e-3, micro_batch=2))
    mine = list(range(w.rank, PARTS, w.size))  # the parts this rank rolls out
    und_items = [[UndItem(image, "what shape? A"), UndItem(image, "what colour? B")],
                 [UndItem(image, "how many? C"), UndItem(image, "where? D")]]
    gen_items = [[GenItem("a red circle"), GenItem("two squares")], [GenItem("a blue star"), GenItem("one dot")]]
    seen = {}
    for step in range(STEPS):
        inputs_u, inputs_g = [], []
        for p in mine:
            with adapter.gathered():
                ub = adapter.und_rollout(und_items[p], 2, UndSampling(max_new_tokens=4, seed=SEED + 10 * step + p))
                gb = adapter.gen_rollout(gen_items[p], 2, GenSampling(cfg_weight=2.0, seed=SEED + 10 * step + p))
            seen[f"s{step}p{p}"] = {"und_ids": ub.out_ids, "und_logp": ub.old_logp, "gen_ids": gb.out_ids,
                                    "gen_logp": gb.old_logp}
            # rewards that vary inside groups, from the sampled tokens (deterministic given the rollout)
            ru = (ub.out_ids[:, 0] % 3).float()
            rg = (gb.out_ids[:, :4].sum(-1) % 5).float()
            inputs_u.append(SideInput(ub, group_adv(ru, 2)))
            inputs_g.append(SideInput(gb, group_adv(rg, 2)))
        metrics = policy.update(inputs_u + inputs_g, LossCfg(agg="seq_mean", norm="side"), est_seed=step)
        seen[f"m{step}"] = {k: torch.tensor(v) for k, v in metrics.items() if k in ("loss", "grad_norm", "update_tokens")}
    full = {}
    for n, p in adapter.model.named_parameters():
        full[n] = (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
    torch.save({"params": full, "init": init, "seen": seen, "world": w.size, "sharded": hasattr(next(adapter.model.parameters()), "full_tensor")},
               os.path.join(out, f"world{w.size}-rank{w.rank}.pt"))
    dist.barrier()
    dist.exit_process(0)


if __name__ == "__main__":
    main(*sys.argv[1:4])
