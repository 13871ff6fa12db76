"""One rank of `npm run bench -- plan` (torchrun, gloo on CPU): a real PairGRPO update of the tiny Janus
or DiMOO, or a real SFT step of the tiny Bagel, next to `pairuni plan`'s figures for the same configuration.

    python bench/_plan_step.py build janus|dimoo|bagel DIR HIDDEN LAYERS
    torchrun --nproc-per-node N bench/_plan_step.py step janus|dimoo|bagel DIR OUT_JSON MICRO_BATCH on|off  (activation checkpointing)

Bagel (`bagel_step`): one `Policy.sft_step` on 4 (und, gen) pairs, then the measured one; MICRO_BATCH is
not used (the plan's micro-batch is the pairs one rank runs: 4 at 1 rank, 2 at 2).

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
import random
import sys

import torch

torch.set_num_threads(1)

from pairuni_sidecar import dist  # noqa: E402
from pairuni_sidecar.adapters import GenItem, LoadSpec, SFTExample, UndItem  # noqa: E402
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


def measure(policy, run) -> dict:
    """Exact state bytes and the RSS-delta peak of ``run()`` (the second step: AdamW's state exists)."""
    grads = {}
    opt_step = policy.optimizer.step

    def counting_step(*a, **kw):  # the gradients as the optimizer sees them, before they are zeroed
        grads["bytes"] = sum(
            local_bytes(p.grad) for g in policy.optimizer.param_groups for p in g["params"] if p.grad is not None
        )
        return opt_step(*a, **kw)

    policy.optimizer.step = counting_step
    dist.barrier()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = rss()
    run()
    peak = hwm() - before
    params = sum(local_bytes(p) for p in policy.adapter.model.parameters())
    optim = sum(local_bytes(v) for s in policy.optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    return {"parameters": params, "gradients": grads["bytes"], "optimizer": optim, "step_peak_rss_delta": peak}


def write(out: str, w, measured: dict, req: PlanRequest, **extra) -> None:
    p = plan(req)
    rec = {
        "rank": w.rank,
        "world": w.size,
        "measured": measured,
        "plan": p["bytes"],
        "plan_this_rank": state_bytes(req, w.rank),
        "counts": p["counts"],
        "image_tokens": p["image_tokens"],
        **extra,
    }
    with open(f"{out}.rank{w.rank}", "w") as f:
        json.dump(rec, f)
    dist.barrier()
    dist.exit_process(0)


#: Bagel's image sides: the VAE's 64 px (4 x 4 latent tokens of 16 px) and the ViT's 56 px, the same
#: image cut to whole 14 px patches (4 x 4 SigLIP tokens): the plan derives the ViT's from the VAE's
BAGEL_VAE_PX, BAGEL_VIT_PX = 64, 56


def bagel_examples(model_dir: str) -> list[SFTExample]:
    """Four (und, gen) pairs: two per rank at world 2 (Bagel is data-parallel over pairs)."""
    ex = []
    for i in range(4):
        img = os.path.join(model_dir, f"bench{i % 2}.png")
        ex += [
            SFTExample("und", img, f"what colour is square {i}? A. red B. blue", "AB"[i % 2] + " it is" * (1 + i % 2)),
            SFTExample("gen", img, f"a {'red' if i % 2 == 0 else 'blue'} square number {i} on grey"),
        ]
    return ex


def bagel_step(model_dir: str, out: str, checkpointing: bool) -> None:
    w = dist.init_world(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    torch.manual_seed(0)
    spec = LoadSpec(
        adapter="bagel",
        path=model_dir,
        device="cpu",
        autocast="off",
        train_modules=["language_model"],
        gradient_checkpointing=checkpointing,
        options={"vae_image_size": BAGEL_VAE_PX, "vit_image_size": BAGEL_VIT_PX},
    )
    policy = load_policy("bagel", spec, OptimCfg(lr=1e-3))
    adapter = policy.adapter
    examples = bagel_examples(model_dir)
    pairs = adapter.pair_examples(examples)
    # text tokens per sample of the longest pair (its packed length less the image tokens, halved: the plan
    # counts an und and a gen sample of `text_tokens` each)
    packs = [adapter.pack(u, v, random.Random(0), torch.Generator().manual_seed(0)) for u, v in pairs]
    pk = max(packs, key=lambda k: k.length)
    text_tokens = -(-(pk.length - len(pk.vit_token_indexes) - len(pk.vae_token_indexes)) // 2)
    policy.sft_step(examples, seed=0)
    measured = measure(policy, lambda: policy.sft_step(examples, seed=1))
    per_rank = -(-len(pairs) // w.size)  # pairs each rank runs, their graphs alive until the one backward
    req = PlanRequest(
        family="bagel",
        model_dir=model_dir,
        ranks=w.size,
        precision="fp32",
        mode="sft",
        micro_batch=per_rank,
        text_tokens=text_tokens,
        image_tokens=len(pk.vae_token_indexes),
        checkpointing=checkpointing,
        train_modules=["language_model"],
    )
    write(out, w, measured, req, text_tokens=text_tokens, packed_length=pk.length, vit_tokens=len(pk.vit_token_indexes))


def step(family: str, model_dir: str, out: str, micro_batch: int, checkpointing: bool) -> None:
    if family == "bagel":
        return bagel_step(model_dir, out, checkpointing)
    w = dist.init_world(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    torch.manual_seed(0)
    spec = LoadSpec(
        path=model_dir, device="cpu", train_modules=["language_model"], gradient_checkpointing=checkpointing
    )
    policy = load_policy(family, spec, OptimCfg(lr=1e-3, micro_batch=micro_batch))
    adapter = policy.adapter
    image = os.path.join(model_dir, "bench.png")
    seeds = [0, 1]  # the estimator seeds of the two updates (DiMOO records old log-probs under each)
    with adapter.gathered():
        ub = adapter.und_rollout(
            [UndItem(image, q) for q in QUESTIONS],
            K,
            UndSampling(max_new_tokens=ANSWER_TOKENS, seed=1 + w.rank, est_seeds=seeds),
        )
        gb = adapter.gen_rollout(PROMPTS, K, GenSampling(cfg_weight=2.0, seed=1 + w.rank, est_seeds=seeds))
    sides = [
        SideInput(ub, torch.tensor([1.0, -1.0] * len(QUESTIONS))),
        SideInput(gb, torch.tensor([1.0, -1.0] * len(PROMPTS))),
    ]
    if family == "janus":
        # text tokens of the longest sequence: a generation prompt, or a question (less its image tokens) + answer
        text_tokens = max(
            max(len(adapter.gen_prompt_ids(p.prompt)) for p in PROMPTS),
            max(len(adapter.und_prompt_ids(q)) for q in QUESTIONS) - adapter.num_image_tokens + ANSWER_TOKENS,
        )
    else:
        # DiMOO: the rolled-out sequences (image codes + text) as the update re-reads them
        text_tokens = max(b.extra["ids"].shape[1] for b in (ub, gb)) - adapter.codec.h * adapter.codec.w
    loss = LossCfg(agg="seq_mean", norm="side")
    policy.update(sides, loss, est_seed=0)

    measured = measure(policy, lambda: policy.update(sides, loss, est_seed=1))
    req = PlanRequest(
        family=family,
        model_dir=model_dir,
        ranks=w.size,
        precision="fp32",
        micro_batch=micro_batch,
        text_tokens=text_tokens,
        checkpointing=checkpointing,
        k=K,
    )
    write(out, w, measured, req, text_tokens=text_tokens)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        family, d, hidden, layers = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        if family == "bagel":
            from pairuni_sidecar.adapters.tiny_bagel import build_tiny_bagel

            build_tiny_bagel(d, seed=0, hidden=hidden, layers=layers)
        elif family == "janus":
            from pairuni_sidecar.adapters.tiny import build_tiny_janus

            build_tiny_janus(d, seed=0, hidden=hidden, layers=layers)
        else:
            from pairuni_sidecar.diffusion.tiny_model import build_tiny_dimoo

            build_tiny_dimoo(d, seed=0, grid=(8, 8), d_model=hidden, n_layers=layers, d_ff=2 * hidden)
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(1)
        for name in ("bench.png", "bench0.png", "bench1.png"):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(os.path.join(d, name))
    else:
        step(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6] == "on")
