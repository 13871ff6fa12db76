"""One rank of `npm run bench -- plan` (torchrun, gloo on CPU): a real PairGRPO update of the tiny Janus
next to `pairuni plan`'s figures for the same configuration.

    python bench/_plan_step.py build janus|dimoo DIR HIDDEN LAYERS
    torchrun --nproc-per-node N bench/_plan_step.py step janus|dimoo DIR OUT_JSON MICRO_BATCH on|off  (activation checkpointing)

`step` rolls out K = 2 answers to 2 questions and K = 2 images for 2 prompts (outside the measurement),
runs one `Policy.update` on them (so AdamW's state exists, as in every step after the first), then
measures a second one, and writes per rank:

- exact bytes: the local shard tensors of every parameter, of every gradient (read in the optimizer's
  step, before it zeroes them) and of AdamW's state (exp_avg, exp_avg_sq, step) after the step;
- the step's peak memory as an RSS delta: the peak RSS (VmHWM, reset through /proc/self/clear_refs
  just before the second update) minus the RSS before it, next to the plan's update peak less the
  state that exists before the step (parameters, optimizer, reference). glibc returns freed blocks of >= 64 KiB to the OS
  (MALLOC_MMAP_THRESHOLD_ is set by bench/plan.ts), so RSS follows the live tensors;
- the plan (precision fp32: the CPU discipline) for the same ranks, micro-batch and sequence lengths.
"""
from __future__ import annotations

import json
import os
import sys

import torch

torch.set_num_threads(1)

from pairuni_sidecar import dist  # noqa: E402
from pairuni_sidecar.adapters import GenItem, LoadSpec, UndItem  # noqa: E402
from pairuni_sidecar.contract import GenSampling, UndSampling  # noqa: E402
from pairuni_sidecar.contract.generated import PlanRequest  # noqa: E402
from pairuni_sidecar.plan.memory import plan, state_bytes  # noqa: E402
from pairuni_sidecar.policy import LossCfg, OptimCfg, SideInput, load_policy  # noqa: E402

K = 2
PROMPTS = [GenItem("a red circle left of a blue square"), GenItem("two green stars above one dot")]
QUESTIONS = ["what shape is left? A. circle B. square", "how many stars? A. one B. two"]
ANSWER_TOKENS = 8


def local_bytes(t: torch.Tensor) -> int:
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def step(family: str, model_dir: str, out: str, micro_batch: int, checkpointing: bool) -> None:
    w = dist.init_world(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    torch.manual_seed(0)
    spec = LoadSpec(path=model_dir, device="cpu", train_modules=["language_model"], gradient_checkpointing=checkpointing)
    policy = load_policy(family, spec, OptimCfg(lr=1e-3, micro_batch=micro_batch))
    adapter = policy.adapter
    image = os.path.join(model_dir, "bench.png")
    seeds = [0, 1]  # the estimator seeds of the two updates (DiMOO records old log-probs under each)
    with adapter.gathered():
        ub = adapter.und_rollout([UndItem(image, q) for q in QUESTIONS], K,
                                 UndSampling(max_new_tokens=ANSWER_TOKENS, seed=1 + w.rank, est_seeds=seeds))
        gb = adapter.gen_rollout(PROMPTS, K, GenSampling(cfg_weight=2.0, seed=1 + w.rank, est_seeds=seeds))
    sides = [SideInput(ub, torch.tensor([1.0, -1.0] * len(QUESTIONS))), SideInput(gb, torch.tensor([1.0, -1.0] * len(PROMPTS)))]
    if family == "janus":
        # text tokens of the longest sequence: a generation prompt, or a question (less its image tokens) + answer
        text_tokens = max(max(len(adapter.gen_prompt_ids(p.prompt)) for p in PROMPTS),
                          max(len(adapter.und_prompt_ids(q)) for q in QUESTIONS) - adapter.num_image_tokens + ANSWER_TOKENS)
    else:
        # DiMOO: the rolled-out sequences (image codes + text) as the update re-reads them
        text_tokens = max(b.extra["ids"].shape[1] for b in (ub, gb)) - adapter.codec.h * adapter.codec.w
    loss = LossCfg(agg="seq_mean", norm="side")
    policy.update(sides, loss, est_seed=0)

    grads = {}
    opt_step = policy.optimizer.step

    def counting_step(*a, **kw):  # the gradients as the optimizer sees them, before they are zeroed
        grads["bytes"] = sum(local_bytes(p.grad) for g in policy.optimizer.param_groups for p in g["params"] if p.grad is not None)
        return opt_step(*a, **kw)

    policy.optimizer.step = counting_step
    dist.barrier()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = rss()
    policy.update(sides, loss, est_seed=1)
    peak = hwm() - before
    params = sum(local_bytes(p) for p in adapter.model.parameters())
    optim = sum(local_bytes(v) for s in policy.optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    req = PlanRequest(family=family, model_dir=model_dir, ranks=w.size, precision="fp32", micro_batch=micro_batch,
                      text_tokens=text_tokens, checkpointing=checkpointing, k=K)
    p = plan(req)
    rec = {"rank": w.rank, "world": w.size, "measured": {"parameters": params, "gradients": grads["bytes"], "optimizer": optim,
                                                        "step_peak_rss_delta": peak},
           "plan": p["bytes"], "plan_this_rank": state_bytes(req, w.rank), "counts": p["counts"], "text_tokens": text_tokens, "image_tokens": p["image_tokens"]}
    with open(f"{out}.rank{w.rank}", "w") as f:
        json.dump(rec, f)
    dist.barrier()
    dist.exit_process(0)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        family, d, hidden, layers = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        if family == "janus":
            from pairuni_sidecar.adapters.tiny import build_tiny_janus

            build_tiny_janus(d, seed=0, hidden=hidden, layers=layers)
        else:
            from pairuni_sidecar.diffusion.tiny_model import build_tiny_dimoo

            build_tiny_dimoo(d, seed=0, grid=(8, 8), d_model=hidden, n_layers=layers, d_ff=2 * hidden)
        import numpy as np
        from PIL import Image

        Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(os.path.join(d, "bench.png"))
    else:
        step(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6] == "on")
