"""Rollout, log-prob and update throughput of a random-init Lumina-DiMOO-8B-sized masked-diffusion model
through the real ``DimooAdapter``.

    python tests/gpu/dimoo_8b_throughput.py            # GPU: d_model 4096, 32 layers, DiMOO vocabulary, bf16 autocast
    python tests/gpu/dimoo_8b_throughput.py --tiny     # CPU smoke test of this script (tiny dims)

The model is the project's bidirectional transformer (``diffusion/tiny_model.py``) at LLaDA-8B's width
and depth (d_model 4096, 32 layers, 32 heads), with a GELU MLP of 18432 (the parameters and FLOPs of
LLaDA's SwiGLU 12288), learned positions instead of RoPE, and DiMOO's token layout (special ids, 8192
image codes at 126356+) in a vocabulary of 134548 = 126356 + 8192 (upstream's image logits are the
last 8192: generators/image_generation_generator.py:84). Not the upstream code: throughput and memory of the
same shapes, not of LLaDA's kernels. Images: 512 px = 32 x 32 codes (1056 image positions with row
separators), 35 MaskGIT steps, CFG against the unconditional prompt, rollout size 2; text: 2 steps.
Updating all 8B parameters with fp32 AdamW needs ~128 GB before activations, so by default the last
``--train-blocks`` blocks and the head train (``--train-blocks 32`` for everything).

Prints one JSON line (also written to ``--out``): rollout seconds and tokens/s per side, the log-prob
pass, one PairGRPO update, the ratio at the first inner iteration, peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np
import torch


def build(model_dir: str, tiny: bool, device: str) -> dict:
    from pairuni_sidecar.diffusion.layout import dimoo_layout
    from pairuni_sidecar.diffusion.tiny_model import TinyMDM, TinyMDMConfig, char_tokenizer, save_tiny_mdm, tiny_layout

    if tiny:
        lay, grid, cell = tiny_layout(96, 64), (4, 4), 8
        c = TinyMDMConfig(vocab_size=lay.vocab_size, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_len=512)
    else:
        lay, grid, cell = dimoo_layout(134548), (32, 32), 16
        c = TinyMDMConfig(vocab_size=lay.vocab_size, d_model=4096, n_layers=32, n_heads=32, d_ff=18432, max_len=2048)
    torch.manual_seed(0)
    with torch.device(device):
        model = TinyMDM(c)
    if not tiny:
        model.to(torch.bfloat16)  # bf16 on disk (16 GB); the adapter keeps fp32 master weights
    save_tiny_mdm(model_dir, model, char_tokenizer(), layout=lay, grid=grid, cell=cell)
    n = sum(p.numel() for p in model.parameters())
    del model
    return {"params": n, "d_model": c.d_model, "layers": c.n_layers, "vocab": c.vocab_size, "grid": list(grid)}


def emit(res: dict, out: str | None) -> None:
    line = json.dumps(res)
    if out:
        with open(out, "w") as f:
            f.write(line + "\n")
    print(line)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--k", type=int, default=2, help="rollout size (paper, Appendix E: 2)")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--answer-slots", type=int, default=8)
    ap.add_argument("--text-steps", type=int, default=2)
    ap.add_argument("--image-steps", type=int, default=35)
    ap.add_argument("--cfg", type=float, default=5.0, help="w in u + w (c - u); DiMOO's s = 4 is w = 5")
    ap.add_argument("--train-blocks", type=int, default=4)
    ap.add_argument("--out")
    a = ap.parse_args()

    from PIL import Image

    from pairuni_sidecar.adapters import GenItem, LoadSpec, UndItem, load_adapter
    from pairuni_sidecar.contract import GenSampling, UndSampling
    from pairuni_sidecar.policy import LossCfg, OptimCfg, Policy, SideInput

    dev = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    tmp = tempfile.mkdtemp(prefix="dimoo-8b-")
    res: dict = {
        "check": "dimoo_8b_throughput",
        "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
        "tiny": a.tiny,
        "torch": torch.__version__,
        "k": a.k,
        "prompts": a.prompts,
        "image_steps": a.image_steps,
        "text_steps": a.text_steps,
        "cfg_weight": a.cfg,
    }
    try:
        t = time.perf_counter()
        res["model"] = build(os.path.join(tmp, "m"), a.tiny, dev)
        res["build_s"] = round(time.perf_counter() - t, 2)
        n_layers = res["model"]["layers"]
        train = [f"blocks.{i}." for i in range(max(0, n_layers - a.train_blocks), n_layers)] + ["head.", "norm."]
        t = time.perf_counter()
        ad = load_adapter(
            "dimoo",
            LoadSpec(
                adapter="dimoo",
                path=os.path.join(tmp, "m"),
                device=dev,
                autocast="auto" if dev == "cuda" else "off",
                train_modules=train,
            ),
        )
        res["load_s"] = round(time.perf_counter() - t, 2)
        res["params_trainable"] = sum(p.numel() for _, p in ad.trainable_parameters())
        side = ad.codec.image_size[0]
        img = os.path.join(tmp, "u.png")
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(img)
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def timed(fn):
            sync()
            t0 = time.perf_counter()
            r = fn()
            sync()
            return r, time.perf_counter() - t0

        und, s = timed(
            lambda: ad.und_rollout(
                [UndItem(img, "What is in the image?")] * a.prompts,
                a.k,
                UndSampling(seed=1, max_new_tokens=a.answer_slots, est_seeds=[0], options={"steps": a.text_steps}),
            )
        )
        res["und_rollout_s"] = round(s, 3)
        res["und_answer_tokens_per_s"] = round(und.out_ids.numel() / s, 2)
        gen, s = timed(
            lambda: ad.gen_rollout(
                [GenItem("a red circle above a blue square")] * a.prompts,
                a.k,
                GenSampling(seed=2, cfg_weight=a.cfg, est_seeds=[0], options={"steps": a.image_steps}),
            )
        )
        res["gen_rollout_s"] = round(s, 3)
        res["gen_images_per_s"] = round(gen.size / s, 4)
        res["gen_codes_per_image"] = int(gen.out_ids.shape[1])
        res["gen_code_tokens_per_s"] = round(gen.out_ids.numel() / s, 2)
        _, s = timed(lambda: ad.token_logprobs(gen, torch.arange(gen.size), est_seed=0, grad=False))
        res["gen_logprob_pass_s"] = round(s, 3)
        pol = Policy(ad, OptimCfg(lr=1e-6, micro_batch=1))
        cfg = LossCfg(eps_low=0.2, eps_high=0.2, beta=0.0, agg="seq_mean", norm="side")
        adv_u = torch.tensor([1.0, -1.0] * (und.size // 2))
        adv_g = torch.tensor([1.0, -1.0] * (gen.size // 2))
        m, s = timed(lambda: pol.update([SideInput(und, adv_u), SideInput(gen, adv_g)], cfg, est_seed=0))
        res["update_s"] = round(s, 3)
        res["update_tokens"] = m["update_tokens"]
        res["ratio_first_inner"] = {k: m[f"{k}/ratio_min"] for k in ("und", "gen")} | {
            f"{k}_max": m[f"{k}/ratio_max"] for k in ("und", "gen")
        }
        res["grad_norm"] = m["grad_norm"]
        if dev == "cuda":
            res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        res["ok"] = True
    except torch.cuda.OutOfMemoryError as e:  # a record of where it stopped is still a result
        res["ok"] = False
        res["error"] = f"OOM: {e}"[:400]
        if dev == "cuda":
            res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(res, a.out)
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
