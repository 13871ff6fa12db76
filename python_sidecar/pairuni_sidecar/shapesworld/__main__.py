"""CLI: ``python -m pairuni_sidecar.shapesworld build|pretrain|eval``."""

from __future__ import annotations

import argparse
import json
import sys


def _progress(done, total, msg):
    print(f"[{done}/{total}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pairuni_sidecar.shapesworld")
    sub = ap.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build", help="write ShapesWorld U/G train/eval manifests + PNGs")
    b.add_argument("--out", required=True)
    b.add_argument("--seed", type=int, default=0)
    for split in ("u_train", "g_train", "u_eval", "g_eval"):
        b.add_argument(f"--{split.replace('_', '-')}", type=int, dest=split)

    p = sub.add_parser("pretrain", help="train the tiny Janus from scratch (resumable)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", help="resumable state directory (default: OUT.work)")
    p.add_argument("--format", help="JSON file with prompt-format fields (see formats.PromptFormat)")
    p.add_argument("--vq-steps", type=int)
    p.add_argument("--sft-steps", type=int)
    p.add_argument("--n-items", type=int)
    p.add_argument("--eval-n", type=int)
    p.add_argument("--eval-every", type=int, help="quick held-out eval every N SFT steps (calibration)")

    e = sub.add_parser("eval", help="held-out understanding accuracy and generation reward per category")
    e.add_argument("--model", required=True)
    e.add_argument("--data", help="a built dataset dir (uses u_eval/g_eval); default: in-memory items")
    e.add_argument("--seed", type=int, default=0, help="data seed of the in-memory held-out items")
    e.add_argument("--n", type=int, default=300, help="generation prompts (and understanding items unless --n-und)")
    e.add_argument("--n-und", type=int, help="understanding items (cheap: greedy answers of a few tokens)")
    e.add_argument("--samples", type=int, default=2, help="images per prompt")
    e.add_argument("--cfg-weight", type=float, default=3.0)
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--sample-seed", type=int, default=0)
    e.add_argument("--grid", help="also write a PNG grid of the first generated image of the first --grid-n prompts")
    e.add_argument("--grid-n", type=int, default=16)

    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if a.cmd == "build":
        from .dataset import build_dataset

        sizes = {k: getattr(a, k) for k in ("u_train", "g_train", "u_eval", "g_eval") if getattr(a, k) is not None}
        res = build_dataset(a.out, seed=a.seed, sizes=sizes, progress=_progress)
    elif a.cmd == "pretrain":
        from .formats import PromptFormat
        from .pretrain import PretrainConfig, pretrain

        over = {
            k: v
            for k, v in (
                ("vq_steps", a.vq_steps),
                ("sft_steps", a.sft_steps),
                ("n_items", a.n_items),
                ("eval_n", a.eval_n),
                ("eval_every", a.eval_every),
            )
            if v is not None
        }
        cfg = PretrainConfig(seed=a.seed, **over)
        res = pretrain(
            a.out, cfg, PromptFormat.load(a.format), work=a.work, log=lambda m: print(m, file=sys.stderr, flush=True)
        )
    else:
        from .evaluate import evaluate_model_dir

        res = evaluate_model_dir(
            a.model,
            data=a.data,
            seed=a.seed,
            n=a.n,
            n_und=a.n_und,
            samples=a.samples,
            cfg_weight=a.cfg_weight,
            temperature=a.temperature,
            sample_seed=a.sample_seed,
            progress=_progress,
            grid=a.grid,
            grid_n=a.grid_n,
        )
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
