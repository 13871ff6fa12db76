"""Python side of ``npm run bench -- rollout``: the static-cache rollout engine against the reference
(dynamic-cache) loop on one tiny random-init Janus, rollouts alternating round by round so a busy
machine slows both alike. Prints one JSON line of figures.

    python bench/_rollout.py OUT_DIR [--rounds 5] [--prompts 4] [--k 4] [--cfg 5] [--image-size 64]
                             [--patch 4] [--und-tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--und-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(a.threads)
    from pairuni_sidecar.adapters import GenItem, LoadSpec, UndItem, load_adapter
    from pairuni_sidecar.adapters.tiny import build_tiny_janus
    from pairuni_sidecar.contract import GenSampling, UndSampling

    model = build_tiny_janus(f"{a.out_dir}/tiny", seed=0, image_size=a.image_size, patch_size=a.patch)
    img = f"{a.out_dir}/q.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(img)
    paths = {
        name: load_adapter("janus", LoadSpec(path=model, device="cpu", options={"rollout_engine": name}))
        for name in ("static", "reference")
    }
    gen_items = [GenItem("a red circle " * (1 + i % 3)) for i in range(a.prompts)]  # ragged prompt lengths
    und_items = [UndItem(img, "What is it? " * (1 + i % 3)) for i in range(a.prompts)]
    times: dict[str, dict[str, list[float]]] = {s: {n: [] for n in paths} for s in ("gen", "und")}
    tokens: dict[str, dict[str, int]] = {"gen": {}, "und": {}}
    identical = True
    for r in range(a.rounds + 1):  # round 0 warms up both paths (allocations, first-call costs)
        outs: dict[str, dict] = {"gen": {}, "und": {}}
        for name, ad in paths.items():
            t0 = time.perf_counter()
            g = ad.gen_rollout(gen_items, a.k, GenSampling(seed=r, cfg_weight=a.cfg, old_logp="rollout"))
            t1 = time.perf_counter()
            u = ad.und_rollout(und_items, a.k, UndSampling(seed=r, max_new_tokens=a.und_tokens, old_logp="rollout"))
            t2 = time.perf_counter()
            outs["gen"][name], outs["und"][name] = g.out_ids, u.out_ids
            if r:
                times["gen"][name].append(t1 - t0)
                times["und"][name].append(t2 - t1)
                tokens["gen"][name] = int(g.out_ids.numel())
                tokens["und"][name] = int(u.out_ids.numel())  # decoded positions, EOS padding included
        identical &= all(torch.equal(outs[s]["static"], outs[s]["reference"]) for s in outs)

    res: dict = {
        "threads": a.threads,
        "rounds": a.rounds,
        "prompts": a.prompts,
        "k": a.k,
        "cfg": a.cfg,
        "image_tokens": paths["static"].num_image_tokens,
        "und_max_tokens": a.und_tokens,
        "identical_tokens": bool(identical),
    }
    for side in ("gen", "und"):
        for name in paths:
            med = statistics.median(times[side][name])
            res[f"{side}_{name}_s"] = round(med, 4)
            res[f"{side}_{name}_tok_s"] = round(tokens[side][name] / med, 1)
        res[f"{side}_ratio"] = round(res[f"{side}_static_tok_s"] / res[f"{side}_reference_tok_s"], 3)
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
