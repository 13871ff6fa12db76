"""Bagel's flow sampler at BAGEL-7B-MoT dimensions (random init, bf16 autocast, 512 px): images/s and peak
memory of the ODE sampler (evaluation) and the SDE sampler (PairGRPO rollouts, per-step log-probs),
and of one SDE trajectory's log-prob pass with gradients (what a PairGRPO update runs per image), through
the real adapter (``BagelAdapter.gen_rollout`` / ``token_logprobs``).

    python tests/gpu/bagel_sampler_profile.py                      # GPU: 7B-MoT dims, 512 px, 50 points, CFG 4
    python tests/gpu/bagel_sampler_profile.py --tiny               # CPU smoke test of this script (tiny dims)
    python tests/gpu/bagel_sampler_profile.py --out tests/gpu/results/bagel_sampler_<gpu>_<date>.json

Dimensions and the random-init model directory are ``bagel_sft_profile.py``'s (``write_model_dir``).
The policy trains the generation expert (``train_modules=["gen_expert"]``, Flow-GRPO's setting): its
weights are fp32 masters, the frozen und expert and ViT bf16. Sampling uses upstream's text-to-image
defaults (guidance 4 inside t in (0.4, 1], global renorm, shift 3) and ``--timesteps`` grid points; each
step is one packed forward of the batch's conditional queries plus, inside the interval, as many
prompt-free ones. A sampler that does not fit records ``"oom"``.

Prints one JSON line per measurement and the whole record at the end (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bagel_sft_profile import write_model_dir  # noqa: E402

PROMPT = "a red square above a blue circle on a white background"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(a, *, device: str, batch: int, timesteps: int, noise_level: float, repeats: int) -> dict:
    """Median wall time of ``repeats`` rollouts of ``batch`` images (after one warm-up rollout)."""
    from pairuni_sidecar.adapters import GenItem
    from pairuni_sidecar.contract.generated import GenSampling

    s = GenSampling(seed=0, cfg_weight=4.0, options={"num_timesteps": timesteps, "noise_level": noise_level})
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for r in range(repeats + 1):
        _sync(device)
        t = time.perf_counter()
        b = a.gen_rollout([GenItem(PROMPT)], batch, s)
        _sync(device)
        if r:
            times.append(time.perf_counter() - t)
    sec = sorted(times)[len(times) // 2]
    out = {
        "batch": batch,
        "timesteps": timesteps,
        "noise_level": noise_level,
        "rollout_s": round(sec, 3),
        "images_per_s": round(batch / sec, 4),
        "image_shape": list(b.images.shape[1:]),
        "logp_recorded": bool(b.out_mask.any()),
    }
    if device == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out, b


def measure_score(a, b, *, device: str) -> dict:
    """One trajectory's per-step log-probs with gradients and their backward (a PairGRPO micro-batch of 1)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    a.train_mode(True)
    try:
        _sync(device)
        t = time.perf_counter()
        logp, mask = a.token_logprobs(b, torch.arange(1), est_seed=0, grad=True)
        (logp * mask).sum().backward()
        _sync(device)
        sec = time.perf_counter() - t
    finally:
        a.train_mode(False)
        for _, p in a.trainable_parameters():
            p.grad = None
    out = {"steps": int(mask.sum()), "score_backward_s": round(sec, 3)}
    if device == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def run(*, tiny: bool, batch: int, timesteps: int, repeats: int, score: bool = True) -> dict:
    from pairuni_sidecar.adapters import LoadSpec, load_adapter

    device = "cpu" if tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny for the CPU smoke test")
    work = tempfile.mkdtemp(prefix="bagel-sampler-")
    try:
        dims = write_model_dir(os.path.join(work, "model"), tiny, device)
        opts = {"vae_image_size": 32 if tiny else 512, "vit_image_size": 28 if tiny else 378, "objective": "pairgrpo"}
        t0 = time.perf_counter()
        a = load_adapter(
            "bagel",
            LoadSpec(
                adapter="bagel",
                path=os.path.join(work, "model"),
                device=device,
                autocast="bf16",
                train_modules=["gen_expert"],
                options=opts,
            ),
        )
        record = {
            "script": "tests/gpu/bagel_sampler_profile.py",
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch": torch.__version__,
            "tiny": tiny,
            "dims": dims,
            "load_s": round(time.perf_counter() - t0, 1),
            "params_total": a.describe()["params_total"],
            "image_px": opts["vae_image_size"],
            "results": {},
        }
        sde_batch = None
        for name, noise in (("ode", 0.0), ("sde", 0.7)):
            try:
                r, b = measure(a, device=device, batch=batch, timesteps=timesteps, noise_level=noise, repeats=repeats)
                if name == "sde":
                    sde_batch = b
            except torch.OutOfMemoryError as e:
                r = {"oom": True, "error": str(e).splitlines()[0]}
            record["results"][name] = r
            print(json.dumps({name: r}), flush=True)
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
        if score and sde_batch is not None:
            try:
                r = measure_score(a, sde_batch, device=device)
            except torch.OutOfMemoryError as e:
                r = {"oom": True, "error": str(e).splitlines()[0]}
            record["results"]["sde_score_backward"] = r
            print(json.dumps({"sde_score_backward": r}), flush=True)
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny dims on CPU (smoke test of this script)")
    ap.add_argument("--batch", type=int, default=4, help="images per rollout")
    ap.add_argument("--timesteps", type=int, default=50, help="time grid points (upstream: 50)")
    ap.add_argument("--repeats", type=int, default=2, help="timed rollouts per sampler (after one warm-up)")
    ap.add_argument("--no-score", action="store_true", help="skip the log-prob + backward measurement")
    ap.add_argument("--out", help="write the JSON record here")
    a = ap.parse_args()
    record = run(tiny=a.tiny, batch=a.batch, timesteps=a.timesteps, repeats=a.repeats, score=not a.no_score)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(record, f, indent=1)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
