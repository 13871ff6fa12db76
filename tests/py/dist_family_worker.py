"""One rank of the DiMOO and Bagel data-parallel checks (run by torchrun from test_dist_families.py).

    torchrun --nproc-per-node N tests/py/dist_family_worker.py FAMILY[,FAMILY...] MODE MODEL_DIR[,...] DATA OUT [CKPT[,...]]

Several families (with their model dirs and checkpoints, comma-separated in the same order) run one
after another in the same ranks: one torch import per rank instead of one per family; each family
loads its own policy and seeds itself.

FAMILY ``dimoo``: PairGRPO updates as ``dist_worker.py`` runs them for Janus (the step's batch in two
fixed parts, part p rolled out with seed SEED + 10 * step + p by rank p % world), behaviour log-probs
recorded for the update's estimator seed. FAMILY ``bagel``: supervised steps on four (und, gen) pairs;
every rank is sent all of them (``train.sft`` is a world op) and the adapter splits them over the ranks;
``bagel-lora`` trains LoRA factors (replicated on every rank) and the flow bridges, ``bagel-ema`` full
weights with an EMA (sharded like them).

MODE ``save`` (2 steps, ``save_policy(CKPT)`` and ``export_policy(CKPT-hf)``,
then the 3rd), ``resume`` (``load_policy(resume_dir=CKPT)``, then the 3rd step). Rank r writes what
it saw to OUT/<family>-<mode>-world<N>-rank<r>.pt.
"""

from __future__ import annotations

import os
import sys

import torch

torch.set_num_threads(1)

from dist_worker import full, group_adv, snapshot  # noqa: E402

from pairuni_sidecar import dist  # noqa: E402
from pairuni_sidecar.adapters import GenItem, LoadSpec, SFTExample, UndItem  # noqa: E402
from pairuni_sidecar.contract import GenSampling, UndSampling  # noqa: E402
from pairuni_sidecar.policy import LossCfg, OptimCfg, SideInput, export_policy, load_policy, save_policy  # noqa: E402

PARTS = 2
SEED = 11


def dimoo_step(policy, w, step: int, image: str) -> dict:
    adapter = policy.adapter
    und = [
        [UndItem(image, "what shape?"), UndItem(image, "what colour?")],
        [UndItem(image, "how many?"), UndItem(image, "where?")],
    ]
    gen = [[GenItem("a red circle"), GenItem("two squares")], [GenItem("a blue star"), GenItem("one dot")]]
    seen, und_in, gen_in = {}, [], []
    for p in range(w.rank, PARTS, w.size):
        s = SEED + 10 * step + p
        with adapter.gathered():
            ub = adapter.und_rollout(
                und[p], 2, UndSampling(max_new_tokens=4, seed=s, est_seeds=[step], options={"steps": 2})
            )
            gb = adapter.gen_rollout(
                gen[p], 2, GenSampling(cfg_weight=2.0, seed=s, est_seeds=[step], options={"steps": 4})
            )
        seen[f"s{step}p{p}"] = {
            "und_ids": ub.out_ids,
            "und_logp": ub.old_logp,
            "gen_ids": gb.out_ids,
            "gen_logp": gb.old_logp,
        }
        # rewards that vary inside groups, from the sampled tokens (deterministic given the rollout)
        und_in.append(SideInput(ub, group_adv((ub.out_ids[:, 0] % 3).float() + torch.arange(ub.size) % 2, 2)))
        gen_in.append(SideInput(gb, group_adv((gb.out_ids[:, :4].sum(-1) % 5).float() + torch.arange(gb.size) % 2, 2)))
    m = policy.update(und_in + gen_in, LossCfg(agg="seq_mean", norm="side"), est_seed=step)
    seen[f"m{step}"] = {k: torch.tensor(v) for k, v in m.items() if k in ("loss", "grad_norm", "update_tokens")}
    return seen


def bagel_examples(data: str) -> list[SFTExample]:
    ex = []
    for i in range(4):  # four pairs: two per rank at world 2
        img = os.path.join(data, f"im{i % 2}.png")
        ex += [
            SFTExample("und", img, f"Color {i}? A. red B. blue", "AB"[i % 2] + " ok" * (i % 3)),
            SFTExample("gen", img, f"a {'red' if i % 2 == 0 else 'blue'} square {i}"),
        ]
    return ex


def bagel_step(policy, w, step: int, data: str) -> dict:
    m = policy.sft_step(bagel_examples(data), seed=1000 + step)
    return {
        f"m{step}": {
            k: torch.tensor(float(v)) for k, v in m.items() if k in ("loss", "grad_norm", "ce/sft_loss", "mse/sft_loss")
        }
    }


def main(families: str, mode: str, model_dirs: str, data: str, out: str, ckpts: str | None = None) -> None:
    w = dist.init_world(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    fams, dirs = families.split(","), model_dirs.split(",")
    cks = ckpts.split(",") if ckpts else [None] * len(fams)
    assert len(dirs) == len(fams) == len(cks), (families, model_dirs, ckpts)
    for family, model_dir, ckpt in zip(fams, dirs, cks):
        run_family(w, family, mode, model_dir, data, out, ckpt)
        dist.barrier()
    dist.exit_process(0)


def run_family(w, family: str, mode: str, model_dir: str, data: str, out: str, ckpt: str | None) -> None:
    torch.manual_seed(0)
    if family == "dimoo":
        spec = LoadSpec(path=model_dir, device="auto")
        optim, step_fn, arg = OptimCfg(lr=5e-3, micro_batch=2), dimoo_step, os.path.join(data, "a.png")
    else:  # bagel-lora: LoRA factors (replicated) + the flow bridges; bagel-ema: full weights with an EMA (sharded)
        how = {
            "bagel-lora": ({"lora_rank": 4, "lora_alpha": 8}, ["gen_expert"]),
            "bagel-ema": ({"ema_decay": 0.9}, ["gen_expert", "vit"]),
        }[family]
        spec = LoadSpec(
            adapter="bagel",
            path=model_dir,
            device="auto",
            autocast="off",
            train_modules=how[1],
            options={"vae_image_size": 32, "vit_image_size": 28, **how[0]},
        )
        optim, step_fn, arg = OptimCfg(lr=1e-3, betas=[0.9, 0.95], eps=1e-15, max_grad_norm=1.0), bagel_step, data
    adapter = "dimoo" if family == "dimoo" else "bagel"
    res: dict = {"world": w.size}
    if mode == "resume":
        policy = load_policy(adapter, spec, optim, resume_dir=ckpt)
        res["loaded"] = snapshot(policy)
        res["loaded_extra"] = {k: full(v) for k, v in policy.adapter.extra_state().items()}
        steps = [2]
    else:
        policy = load_policy(adapter, spec, optim)
        res["init"] = {n: full(p) for n, p in policy.adapter.model.named_parameters()}
        res["init_extra"] = {k: full(v) for k, v in policy.adapter.extra_state().items()}
        steps = [0, 1]
    seen = {}
    for step in steps:
        seen.update(step_fn(policy, w, step, arg))
    if mode == "save":
        res["saved"] = snapshot(policy)
        res["saved_extra"] = {k: full(v) for k, v in policy.adapter.extra_state().items()}
        save_policy(policy, adapter, ckpt)
        export_policy(policy, ckpt + "-hf")
        seen.update(step_fn(policy, w, 2, arg))
    res["seen"] = seen
    res["params"] = {n: full(p) for n, p in policy.adapter.model.named_parameters()}
    res["extra"] = {k: full(v) for k, v in policy.adapter.extra_state().items()}
    res["sharded"] = dist.is_sharded(next(policy.adapter.model.parameters()))
    torch.save(res, os.path.join(out, f"{family}-{mode}-world{w.size}-rank{w.rank}.pt"))


if __name__ == "__main__":
    main(*sys.argv[1:])
