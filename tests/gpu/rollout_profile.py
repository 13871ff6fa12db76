"""torch.profiler over one Janus-Pro-1B-sized generation rollout through the real adapter (random
init, no download): the ops that take the host and device time. Prints the top rows as text and
writes one JSON line with the totals.

    python tests/gpu/rollout_profile.py [--tiny] [--out DIR]
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
    ap.add_argument("--out", default=".")
    a = ap.parse_args()
    from torch.profiler import ProfilerActivity, profile

    from pairuni_sidecar.adapters import GenItem, LoadSpec, SamplingCfg, load_adapter

    device = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    work = tempfile.mkdtemp(prefix="janus1b-prof-")
    try:
        build(os.path.join(work, "model"), a.tiny, device)
        ad = load_adapter("janus", LoadSpec(model_dir=os.path.join(work, "model"), device=device, autocast="auto"))
        items = [GenItem("a photo of object 0"), GenItem("a photo of object 1")]
        ad.gen_rollout(items[:1], 1, SamplingCfg(seed=0))  # warm-up
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        t0 = time.perf_counter()
        with profile(activities=acts) as prof:
            ad.gen_rollout(items, a.k, SamplingCfg(seed=1, cfg_weight=5.0, old_logp="rollout"))
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
        print(json.dumps({"device": device, "k": a.k, "profiled_wall_s": round(wall, 2)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
