"""torch.profiler over one Janus-Pro-1B-sized understanding rollout through the real adapter (random
init, no download): the ops that take the host and device time per decode step. Prints the top rows
as text and one JSON line with the totals.

    python tests/gpu/rollout_profile.py [--tiny] [--tokens 32] [--out DIR]

Keep --tokens small: a whole 576-token image rollout records millions of events, and summarising
them took longer than the 400 s the first GPU attempt allowed (it produced nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from janus_pro_1b_throughput import build  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32, help="decode steps profiled")
    ap.add_argument("--out", default=".")
    a = ap.parse_args()
    from torch.profiler import ProfilerActivity, profile

    from PIL import Image

    from pairuni_sidecar.adapters import LoadSpec, UndItem, load_adapter
    from pairuni_sidecar.contract import UndSampling

    device = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    work = tempfile.mkdtemp(prefix="janus1b-prof-")
    try:
        build(os.path.join(work, "model"), a.tiny, device)
        ad = load_adapter("janus", LoadSpec(path=os.path.join(work, "model"), device=device, autocast="auto"))
        img = os.path.join(work, "img.png")
        Image.new("RGB", (ad.image_size, ad.image_size), (120, 30, 200)).save(img)
        items = [UndItem(img, "Question 0? A. x B. y"), UndItem(img, "Question 1? A. x B. y")]
        s = UndSampling(seed=1, max_new_tokens=a.tokens, old_logp="rollout")
        ad.und_rollout(items[:1], 1, s)  # warm-up
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        t0 = time.perf_counter()
        with profile(activities=acts) as prof:
            ad.und_rollout(items, a.k, s)
            if device == "cuda":
                torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
        cpu_table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        dev_table = prof.key_averages().table(sort_by=key, row_limit=15)
        with open(os.path.join(a.out, "rollout_profile.txt"), "w") as f:
            f.write(f"wall {wall:.2f}s (profiled)\n\n== by self CPU time\n{cpu_table}\n\n== by {key}\n{dev_table}\n")
        print(cpu_table)
        print(dev_table)
        print(
            json.dumps(
                {
                    "device": device,
                    "k": a.k,
                    "tokens": a.tokens,
                    "profiled_wall_s": round(wall, 2),
                    "ms_per_step": round(1e3 * wall / a.tokens, 2),
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
