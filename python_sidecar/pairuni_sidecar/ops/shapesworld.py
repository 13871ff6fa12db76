"""Sidecar ops for the embedded ShapesWorld demo (thin wrappers over ``pairuni_sidecar.shapesworld``).

- ``shapesworld.build``    {out, seed?, sizes?}                -> dataset metadata + manifest paths
- ``shapesworld.pretrain`` {out, seed?, work?, format?, config?} -> {out, seconds, metrics}
- ``shapesworld.eval``     {model, data?, seed?, n?, samples?, cfg_weight?, temperature?, sample_seed?}
- ``shapesworld.score``    {prompts, mode?} + tensor ``images`` (B,H,W,3) uint8 -> tensors graded/binary
Importing this module also registers the ``shapes`` reward.
"""
from __future__ import annotations

from ..errors import BadRequest
from ..registry import Reply, op, require
from ..rewards.shapes import ShapesScorer  # noqa: F401 - registers @reward("shapes")


def _progress(ctx):
    return lambda done, total, msg: ctx.progress(done, total, msg)


@op("shapesworld.build", doc="write ShapesWorld U/G train/eval JSONL manifests and PNGs", idempotent=True)
def build(ctx, args, tensors):
    from ..shapesworld.dataset import build_dataset

    out = require(args, "out", str, op_name=ctx.op)
    sizes = args.get("sizes") or {}
    if not isinstance(sizes, dict) or not all(isinstance(v, int) and v >= 0 for v in sizes.values()):
        raise BadRequest(f"{ctx.op}: sizes must map split names to non-negative ints")
    try:
        return build_dataset(out, seed=int(args.get("seed", 0)), sizes=sizes, progress=_progress(ctx), check=ctx.check)
    except ValueError as e:
        raise BadRequest(f"{ctx.op}: {e}") from None


@op("shapesworld.pretrain", doc="pretrain the tiny ShapesWorld Janus from scratch (resumable)")
def pretrain(ctx, args, tensors):
    from ..shapesworld.formats import PromptFormat
    from ..shapesworld.pretrain import PretrainConfig, pretrain as run

    out = require(args, "out", str, op_name=ctx.op)
    try:
        cfg = PretrainConfig(seed=int(args.get("seed", 0)), **(args.get("config") or {}))
        fmt = PromptFormat.from_json(args.get("format") or {})
    except (TypeError, ValueError) as e:
        raise BadRequest(f"{ctx.op}: {e}") from None
    return run(out, cfg, fmt, work=args.get("work"), log=lambda m: None, progress=_progress(ctx), check=ctx.check)


@op("shapesworld.eval", doc="held-out MCQ accuracy and generation reward per category", idempotent=True)
def evaluate(ctx, args, tensors):
    from ..shapesworld.evaluate import evaluate as run
    from ..shapesworld.model import load_model_dir

    model_dir = require(args, "model", str, op_name=ctx.op)
    try:
        model, tok, fmt, _ = load_model_dir(model_dir)
    except FileNotFoundError as e:
        from ..errors import NotFound

        raise NotFound(str(e)) from None
    ctx.check()
    return run(
        model, tok, fmt, data=args.get("data"), seed=int(args.get("seed", 0)), n=int(args.get("n", 300)),
        samples=int(args.get("samples", 2)), cfg_weight=float(args.get("cfg_weight", 3.0)),
        temperature=float(args.get("temperature", 1.0)), sample_seed=int(args.get("sample_seed", 0)),
        progress=_progress(ctx),
    )


@op("shapesworld.score", doc="score images against ShapesWorld prompts (graded and binary)", idempotent=True)
def score(ctx, args, tensors):
    prompts = require(args, "prompts", list, op_name=ctx.op)
    if "images" not in tensors:
        raise BadRequest(f"{ctx.op}: missing tensor 'images' (uint8, B x H x W x 3)")
    graded, binary = ShapesScorer(str(args.get("mode", "graded"))).score_both(tensors["images"], [str(p) for p in prompts])
    return Reply({"n": len(prompts), "graded_mean": float(graded.mean()), "binary_mean": float(binary.mean())},
                 {"graded": graded, "binary": binary})
