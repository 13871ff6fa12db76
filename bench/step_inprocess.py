"""In-process baseline for bench/step.ts: replays recorded PairGRPO op calls (same arguments, seeds
and advantages) through the same op functions, without the wire.

Line protocol on stdin/stdout (so the bench can interleave both paths step by step and the machine's
load affects them alike): the first line is the ``train.load`` args; every further line is one step's
list of recorded calls ``[{op, args, tensors, result?}]``; for each, one JSON line is printed:
``{"step_s": float, "identical": bool}`` (``identical``: update metrics equal the recorded ones).

    python bench/step_inprocess.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    from pairuni_sidecar.registry import HandleStore, OpContext, Reply, get_op, load_plugins

    load_plugins()
    state: dict = {}
    handles = HandleStore()

    def call(op: str, args: dict, tensors: dict):
        # The recorded args are what the client sent (complete, already checked): the handler alone runs here.
        out = get_op(op).fn(OpContext(op, 0, None, state, handles), args, tensors)
        return out.args if isinstance(out, Reply) else out

    call("train.load", json.loads(sys.stdin.readline()), {})
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        identical = True
        elapsed = 0.0
        for c in json.loads(line):
            tensors = {k: torch.tensor(v, dtype=torch.float32) for k, v in c["tensors"].items()}
            t0 = time.perf_counter()
            out = call(c["op"], c["args"], tensors)
            elapsed += time.perf_counter() - t0
            if c["op"] == "train.update" and c.get("result"):
                for k in ("loss", "grad_norm", "und/clip_frac", "gen/clip_frac"):
                    if abs(float(out[k]) - float(c["result"][k])) > 1e-6 * max(1.0, abs(float(out[k]))):
                        identical = False
        print(json.dumps({"step_s": elapsed, "identical": identical}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
