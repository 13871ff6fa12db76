"""Sidecar ops for the embedded ShapesWorld demo (thin wrappers over ``pairuni_sidecar.shapesworld``);
their requests and replies are declared in src/contract/ops.ts."""

from __future__ import annotations

from ..errors import BadRequest, NotFound
from ..registry import Reply, op
from ..shapesworld.reward import ShapesScorer


def _progress(ctx):
    return lambda done, total, msg: ctx.progress(done, total, msg)


@op("shapesworld.build", doc="write ShapesWorld U/G train/eval JSONL manifests and PNGs")
def build(ctx, args, tensors):
    from ..shapesworld.dataset import build_dataset

    try:
        return build_dataset(
            args["out"], seed=args["seed"], sizes=args["sizes"], progress=_progress(ctx), check=ctx.check
        )
    except ValueError as e:
        raise BadRequest(f"{ctx.op}: {e}") from None


@op("shapesworld.overlap", doc="train/eval overlap of a built ShapesWorld dataset and a model card's pretraining pool")
def overlap(ctx, args, tensors):
    import json
    from pathlib import Path

    from ..shapesworld.heldout import pretraining_pool, split_overlap
    from ..shapesworld.model import MODEL_CARD

    seed, n, caveat = None, 0, None
    if args.get("model_dir"):
        card_path = Path(args["model_dir"]) / MODEL_CARD
        if not card_path.is_file():
            raise NotFound(f"{card_path} not found: not a pairuni model directory")
        seed, n, caveat = pretraining_pool(json.loads(card_path.read_text()))
    try:
        return {**split_overlap(args["data"], seed, n), "caveat": caveat}
    except FileNotFoundError as e:
        raise NotFound(str(e)) from None


@op("shapesworld.pretrain", doc="pretrain the tiny ShapesWorld Janus from scratch (resumable)")
def pretrain(ctx, args, tensors):
    from ..shapesworld.formats import PromptFormat
    from ..shapesworld.pretrain import PretrainConfig, pretrain as run

    out = args["out"]
    try:
        cfg = PretrainConfig(seed=args["seed"], **args["config"])
        fmt = PromptFormat.from_json(args["format"])
    except (TypeError, ValueError) as e:
        raise BadRequest(f"{ctx.op}: {e}") from None
    return run(out, cfg, fmt, work=args.get("work"), log=lambda m: None, progress=_progress(ctx), check=ctx.check)


@op("shapesworld.eval", doc="held-out MCQ accuracy and generation reward per category, through the model's adapter")
def evaluate(ctx, args, tensors):
    from ..shapesworld.evaluate import evaluate_model_dir

    kw = {k: v for k, v in args.items() if k not in ("model_dir", "device")}
    try:
        return evaluate_model_dir(args["model_dir"], device=args["device"], progress=_progress(ctx), **kw)
    except FileNotFoundError as e:
        raise NotFound(str(e)) from None


@op("shapesworld.score", doc="score images against ShapesWorld prompts (graded and binary)")
def score(ctx, args, tensors):
    prompts = args["prompts"]
    graded, binary = ShapesScorer(args["mode"]).score_both(tensors["images"], prompts)
    return Reply(
        {"n": len(prompts), "graded_mean": float(graded.mean()), "binary_mean": float(binary.mean())},
        {"graded": graded, "binary": binary},
    )
