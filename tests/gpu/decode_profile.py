"""Where a Janus-Pro-1B-sized decode step spends its time (random init, no download).

    python tests/gpu/decode_profile.py            # GPU
    python tests/gpu/decode_profile.py --tiny     # CPU smoke test of this script

Times one cached decode step of the language model at the rollout batch (2 prompts x K=8 x CFG = 32
rows) in three set-ups: fp32 master weights under bf16 autocast (what the adapter does), a bf16
copy of the weights without autocast, and the same bf16 step replayed as a CUDA graph with a static
cache; plus the host time to issue one step (no sync), which says whether a step is launch-bound.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from janus_pro_1b_throughput import emit, janus_pro_1b_config  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=24)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from transformers import JanusForConditionalGeneration
    from transformers.cache_utils import DynamicCache, StaticCache

    dev = torch.device("cuda" if torch.cuda.is_available() and not a.tiny else "cpu")
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    with torch.device(dev):
        model = JanusForConditionalGeneration(janus_pro_1b_config(a.tiny)).eval()
    lm = model.model.language_model
    H = lm.config.hidden_size
    x0 = torch.randn(a.rows, a.prompt, H, device=dev) * 0.02
    res: dict = {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "rows": a.rows,
        "prompt": a.prompt,
        "steps": a.steps,
        "layers": lm.config.num_hidden_layers,
        "hidden": H,
    }

    def time_dynamic(label: str, amp: bool) -> None:
        ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if amp else torch.autocast(dev.type, enabled=False)
        with torch.no_grad(), ctx:
            for rep in range(2):  # the first pass warms the allocator and kernels
                cache = DynamicCache(config=lm.config)
                h = lm(
                    inputs_embeds=x0.to(next(lm.parameters()).dtype), past_key_values=cache, use_cache=True
                ).last_hidden_state
                e = h[:, -1:]
                sync()
                host, t0 = 0.0, time.perf_counter()
                for t in range(a.steps):
                    t1 = time.perf_counter()
                    e = lm(inputs_embeds=e, past_key_values=cache, use_cache=True).last_hidden_state[:, -1:]
                    host += time.perf_counter() - t1
                sync()
                total = time.perf_counter() - t0
        res[f"{label}_ms_per_step"] = round(1e3 * total / a.steps, 3)
        res[f"{label}_host_issue_ms_per_step"] = round(1e3 * host / a.steps, 3)

    time_dynamic("fp32_weights_bf16_autocast", amp=dev.type == "cuda")
    if dev.type == "cuda":
        lm.to(torch.bfloat16)
        time_dynamic("bf16_weights", amp=False)
        # Static cache + CUDA graph: one replay per step, the host issues one launch.
        try:
            L = a.prompt + a.steps + 1
            cache = StaticCache(config=lm.config, max_cache_len=L)
            with torch.no_grad():
                lm(
                    inputs_embeds=x0.bfloat16(),
                    past_key_values=cache,
                    use_cache=True,
                    cache_position=torch.arange(a.prompt, device=dev),
                )
                e = torch.zeros(a.rows, 1, H, device=dev, dtype=torch.bfloat16)
                pos = torch.tensor([a.prompt], device=dev)
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(2):
                        out = lm(
                            inputs_embeds=e, past_key_values=cache, use_cache=True, cache_position=pos
                        ).last_hidden_state
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    out = lm(
                        inputs_embeds=e, past_key_values=cache, use_cache=True, cache_position=pos
                    ).last_hidden_state
                sync()
                t0 = time.perf_counter()
                for t in range(a.steps):
                    pos.fill_(a.prompt + t)
                    g.replay()
                    e.copy_(out[:, -1:])
                sync()
                res["bf16_static_cuda_graph_ms_per_step"] = round(1e3 * (time.perf_counter() - t0) / a.steps, 3)
        except Exception as exc:  # a measurement, not a feature: report why it could not run
            res["bf16_static_cuda_graph_error"] = f"{type(exc).__name__}: {exc}"[:300]
        res["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    emit(res, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
