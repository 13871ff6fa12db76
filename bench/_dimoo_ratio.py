"""What the DiMOO log-prob estimator choice does to the PPO ratio (driven by bench/dimoo_ratio.ts).

One rollout batch per side from the model (the shipped tiny ShapesWorld DiMOO if present), one PairGRPO
update (lr as given, random +-1 advantages), then for M estimator seeds the per-token log-ratio
log rho = logp_new(mask_j) - logp_old(mask_j') with
  - shared masks (j' = j: what the trainer's est_seed gives), and
  - independent masks (j' = j + 1: old and current passes drawing their own masks),
for p_mask_prompt in {0, 0.15, 0.3} and, on the image side, guidance in the log-prob pass or not; and the
trajectory estimator (the recorded unmask steps rescored).
Reports the variance over seeds of the token ratio (mean over tokens) and of the sequence log-ratio.
Then each estimator under its own update (one_step at p = 0.15, trajectory; image log-prob with and
without guidance): the spread over the batch of the log-ratio at inner iteration 2 (``iter2_*``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import tempfile

import torch


def main() -> None:
    from PIL import Image

    from pairuni_sidecar.adapters import GenItem, LoadSpec, UndItem, load_adapter
    from pairuni_sidecar.contract import GenSampling, UndSampling
    from pairuni_sidecar.diffusion.tiny_model import build_tiny_dimoo
    from pairuni_sidecar.policy import LossCfg, OptimCfg, Policy, SideInput
    from pairuni_sidecar.shapesworld.formats import PromptFormat
    from pairuni_sidecar.shapesworld.render import render
    from pairuni_sidecar.shapesworld.scenes import make_item

    model, seeds, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="dimoo-ratio-")
    try:
        if not os.path.isfile(os.path.join(model, "config.json")):
            model = build_tiny_dimoo(os.path.join(tmp, "m"), seed=0)
        card = os.path.join(model, "pairuni_model.json")
        opts = json.load(open(card))["adapter_options"] if os.path.isfile(card) else {}
        a = load_adapter("dimoo", LoadSpec(path=model, device="cpu", options=opts))
        fmt = PromptFormat()
        items = [make_item(0, "u_train", i) for i in range(8)]
        paths = []
        for i, it in enumerate(items):
            p = os.path.join(tmp, f"{i}.png")
            Image.fromarray(render(it.objects)).save(p)
            paths.append(p)
        und = a.und_rollout(
            [UndItem(p, fmt.und_user_text(it.question, it.choices)) for p, it in zip(paths, items)],
            2,
            UndSampling(seed=1, max_new_tokens=16, est_seeds=[0], options={"steps": 2}),
        )
        gen = a.gen_rollout(
            [GenItem(it.prompt) for it in items],
            2,
            GenSampling(seed=2, cfg_weight=3.0, est_seeds=[0], options={"steps": 35}),
        )
        old = copy.deepcopy(a.model.state_dict())
        pol = Policy(a, OptimCfg(lr=lr))
        adv = torch.tensor([1.0, -1.0] * 8)
        pol.update(
            [SideInput(und, adv), SideInput(gen, adv)],
            LossCfg(eps_low=0.2, eps_high=0.2, beta=0.0, agg="seq_mean", norm="side"),
            est_seed=0,
        )
        new = copy.deepcopy(a.model.state_dict())

        def logps(batch, state):
            a.model.load_state_dict(state)
            return [
                a.token_logprobs(batch, torch.arange(batch.size), est_seed=j, grad=False)[0] for j in range(seeds + 1)
            ]

        res = {}
        cases = [("und", und, None)] + [("gen_" + k, gen, w) for k, w in (("cfg", 3.0), ("cond", 1.0))]
        for p in (0.0, 0.15, 0.3):
            a.opts = dataclasses.replace(a.opts, p_mask_prompt=p)
            for name, batch, w in cases:
                if w is not None:
                    batch.extra["w"] = w
                lo, ln = logps(batch, old), logps(batch, new)
                m = batch.out_mask.bool()
                for how, shift in (("shared", 0), ("independent", 1)):
                    lr_tok = torch.stack([ln[j] - lo[j + shift] for j in range(seeds)])  # (M, B, L)
                    rho = lr_tok.exp()
                    res[f"{name}/p{p}/{how}/ratio_var"] = float(rho.var(0)[m].mean())
                    res[f"{name}/p{p}/{how}/seq_logratio_var"] = float((lr_tok * m).sum(-1).var(0).mean())
                    res[f"{name}/p{p}/{how}/ratio_mean_abs_dev"] = float((rho - 1).abs().mean(0)[m].mean())
        # the trajectory estimator: no mask draws, so shared and independent seeds coincide
        a.opts = dataclasses.replace(a.opts, estimator="trajectory")
        for name, batch, w in cases:
            if w is not None:
                batch.extra["w"] = w
            lo, ln = logps(batch, old), logps(batch, new)
            m = batch.out_mask.bool()
            lr_tok = torch.stack([ln[j] - lo[j] for j in range(seeds)])
            res[f"{name}/trajectory/ratio_var"] = float(lr_tok.exp().var(0)[m].mean())
            res[f"{name}/trajectory/ratio_mean_abs_dev"] = float((lr_tok.exp() - 1).abs().mean(0)[m].mean())
        # Each estimator under its own update (what a run with it does): from the same weights, batch and
        # advantages, one update with that estimator (inner iteration 1, est_seed 0), then the log-ratio
        # log pi_new - log pi_old of inner iteration 2 (est_seed 1, old and new passes on the same masks):
        # its spread over the batch's tokens and over its trajectories (sequence log-ratio = token sum).
        for est in ("one_step", "trajectory"):
            a.opts = dataclasses.replace(a.opts, estimator=est, p_mask_prompt=0.15)
            for w_name, w in (("cfg", 3.0), ("cond", 1.0)):
                gen.extra["w"] = w
                a.model.load_state_dict(old)
                Policy(a, OptimCfg(lr=lr)).update(
                    [SideInput(und, adv), SideInput(gen, adv)],
                    LossCfg(eps_low=0.2, eps_high=0.2, beta=0.0, agg="seq_mean", norm="side"),
                    est_seed=0,
                )
                upd = copy.deepcopy(a.model.state_dict())
                for name, batch in (("und", und), (f"gen_{w_name}", gen)):
                    if name == "und" and w_name == "cond":
                        continue  # text has no image guidance: the cfg update's numbers stand
                    m = batch.out_mask.bool()
                    a.model.load_state_dict(old)
                    lo = a.token_logprobs(batch, torch.arange(batch.size), est_seed=1, grad=False)[0]
                    a.model.load_state_dict(upd)
                    ln = a.token_logprobs(batch, torch.arange(batch.size), est_seed=1, grad=False)[0]
                    d = ln - lo
                    res[f"{name}/{est}/iter2_token_logratio_std"] = float(d[m].std())
                    res[f"{name}/{est}/iter2_seq_logratio_std"] = float((d * m).sum(-1).std())
                    res[f"{name}/{est}/iter2_clipped_frac"] = float(((d.exp() - 1).abs() > 0.2)[m].float().mean())
        a.model.load_state_dict(old)
        print(json.dumps({k: float(f"{v:.4g}") for k, v in res.items()}))
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
