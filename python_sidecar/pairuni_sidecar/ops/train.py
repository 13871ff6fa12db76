"""PairGRPO training ops. Logic lives in plain functions (``TrainSession``, ``score_batch``,
``save_grid``) that pytest and the in-process bench call directly; the ``@op`` wrappers are thin.

Each op's request and reply are declared once in src/contract/ops.ts; the server has already checked
the request against that declaration (names, types, ranges, payload dtypes) before a handler runs,
and the config records arrive as generated dataclasses (``LoadModel``, ``LoadOptim``, ``UndSampling``,
``GenSampling``, ``UpdateLoss``, ``Reward``) holding explicit values. Heavy tensors stay here,
referenced by rollout handles in the one handle store (``handles.free`` drops them).
Every reply carries ``elapsed_s`` (time inside the op) so the controller can separate compute from transport.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import torch

from ..adapters import GenItem, LoadSpec, RolloutBatch, SFTExample, UndItem
from ..contract.generated import GenSampling, Reward, UndSampling
from ..errors import BadRequest, NonFiniteError
from ..imaging import save_grid
from ..policy import LossCfg, OptimCfg, Policy, SideInput, export_policy, load_policy, save_policy
from ..registry import Reply, op, resolve
from ..rewards import make_reward

# -- requests -> domain objects ----------------------------------------------------------------


def load_spec(args: dict) -> tuple[LoadSpec, OptimCfg]:
    # The records were checked against their declarations at the boundary (server / run_op).
    return LoadSpec(**args["model"], ref_model_dir=args.get("ref_model_dir")), OptimCfg(**args["optim"])


def und_items(items: list[dict]) -> list[UndItem]:
    return [UndItem(it["image_path"], it["text"]) for it in items]


def gen_items(items: list[dict]) -> list[GenItem]:
    return [GenItem(it["prompt"]) for it in items]


# -- rewards -----------------------------------------------------------------------------------


def score_batch(scorer, batch: RolloutBatch, reward_name: str) -> torch.Tensor:
    """Score a gen rollout batch; the result is checked to be a finite (B,) float32 tensor."""
    if batch.side != "gen" or batch.images is None:
        raise BadRequest(f"reward {reward_name!r} scores generation rollouts; this handle is a {batch.side!r} rollout")
    prompts = [batch.prompts[g] for g in batch.group.tolist()]
    r = scorer.score(batch.images, prompts)
    r = torch.as_tensor(r).detach().to("cpu", torch.float32).reshape(-1)
    if r.shape[0] != batch.size:
        raise BadRequest(f"reward {reward_name!r} returned {r.shape[0]} scores for {batch.size} images")
    bad = (~torch.isfinite(r)).nonzero().flatten().tolist()
    if bad:
        raise NonFiniteError(
            f"reward {reward_name!r} returned NaN/inf for trajectories {bad[:8]} "
            f"(prompts: {[prompts[i] for i in bad[:3]]}); no advantage was computed",
            detail={"reward": reward_name, "rows": bad},
        )
    return r


# -- the session -------------------------------------------------------------------------------


class TrainSession:
    """A loaded policy plus cached reward scorers (one per process, kept in ``ctx.state``)."""

    def __init__(self, args: dict) -> None:
        self.spec, self.optim = load_spec(args)
        torch.manual_seed(int(args["seed"]))
        self.policy: Policy = load_policy(self.spec.adapter, self.spec, self.optim, args.get("resume_dir"))
        self.scorers: dict[str, Any] = {}

    @property
    def adapter(self):
        return self.policy.adapter

    def describe(self) -> dict:
        return {**self.adapter.describe(), "adapter": self.spec.adapter, "optimizer_step": self.policy.step_count}

    def scorer(self, spec: dict):
        r = Reward(**spec)
        key = f"{r.name}:{json.dumps(r.config, sort_keys=True)}"
        if key not in self.scorers:
            self.scorers[key] = make_reward(r.name, r.config)
        return self.scorers[key]

    def reward(self, batch: RolloutBatch, spec: dict) -> torch.Tensor:
        return score_batch(self.scorer(spec), batch, spec["name"])

    def update(
        self,
        sides: dict[str, list[tuple[RolloutBatch, torch.Tensor]]],
        loss: dict,
        *,
        est_seed: int,
        grad_cosine: bool = False,
        check: Callable[[], None] | None = None,
    ) -> dict:
        """``sides``: per side, one or more (rollout, advantages) parts (several rollouts of one side
        share its normalisation group)."""
        cfg = LossCfg(**loss)
        inputs = []
        for side in ("und", "gen"):  # fixed order: und first (grad cosine splits after it)
            for batch, adv in sides.get(side, []):
                if batch.side != side:
                    raise BadRequest(f"train.update: handle given for {side!r} holds a {batch.side!r} rollout")
                inputs.append(SideInput(batch, torch.as_tensor(adv, dtype=torch.float32).reshape(-1)))
        return self.policy.update(inputs, cfg, est_seed=est_seed, grad_cosine=grad_cosine, check=check)

    def save(self, path: str, hf: bool = False) -> str:
        return save_policy(self.policy, self.spec.adapter, path, hf=hf)

    def export(self, path: str) -> str:
        return export_policy(self.policy, path)


# -- op wrappers -------------------------------------------------------------------------------


def _session(ctx) -> TrainSession:
    s = ctx.state.get("train")
    if s is None:
        raise BadRequest("no policy loaded in this sidecar: call train.load first")
    return s


def _batch(ctx, handle: str) -> RolloutBatch:
    b = ctx.handles.get(handle)
    if not isinstance(b, RolloutBatch):
        raise BadRequest(f"handle {handle!r} is not a rollout")
    return b


def _timed(fn):
    def wrapper(ctx, args, tensors):
        t0 = time.perf_counter()
        res = fn(ctx, args, tensors)
        el = time.perf_counter() - t0
        if isinstance(res, Reply):
            res.args["elapsed_s"] = el
            return res
        return {**(res or {}), "elapsed_s": el}

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@op("train.load")
@_timed
def _op_load(ctx, args, tensors):
    """Load (or resume) the policy to train; replaces a previously loaded one and its rollouts."""
    ctx.state.pop("train", None)
    for h in ctx.handles.owned("rollout"):
        ctx.handles.free(h)
    sess = TrainSession(args)
    ctx.state["train"] = sess
    return sess.describe()


def _rollout(ctx, side: str, args: dict) -> dict:
    sess = _session(ctx)
    ctx.progress(0, 1, f"{side} rollout", force=True)
    # Per-rank op: with FSDP2 the weights are gathered once for the whole rollout, so the decode loop
    # runs no collective (ranks finish their answers at different steps).
    with sess.adapter.gathered():
        if side == "und":
            sess.adapter.require("und_rollout")
            s = UndSampling(**args["sampling"])
            sess.adapter.check_honoured("und", s)
            b = sess.adapter.und_rollout(und_items(args["items"]), args["n"], s)
        else:
            sess.adapter.require("gen_rollout")
            s = GenSampling(**args["sampling"])
            sess.adapter.check_honoured("gen", s)
            b = sess.adapter.gen_rollout(gen_items(args["items"]), args["n"], s)
    out = {
        "handle": ctx.handles.put(b, prefix=f"rollout-{side}"),
        "side": side,
        "size": b.size,
        "tokens": b.num_tokens,
        "lengths": [int(x) for x in b.out_mask.sum(-1).tolist()],
    }
    if b.texts is not None:
        out["texts"] = b.texts
    return out


@op("train.und_rollout")
@_timed
def _op_und_rollout(ctx, args, tensors):
    """Sample n answers per (image, question); the batch stays here under a handle."""
    return _rollout(ctx, "und", args)


@op("train.gen_rollout")
@_timed
def _op_gen_rollout(ctx, args, tensors):
    """Sample n images per prompt; the batch stays here under a handle."""
    return _rollout(ctx, "gen", args)


@op("train.reward")
@_timed
def _op_reward(ctx, args, tensors):
    """Score a generation rollout with a registered reward."""
    r = _session(ctx).reward(_batch(ctx, args["handle"]), args["reward"])
    return Reply({"size": int(r.shape[0])}, {"rewards": r})


@op("train.rollout_images")
@_timed
def _op_rollout_images(ctx, args, tensors):
    """A generation rollout's images (uint8, B x H x W x 3) and each image's prompt, for rewards scored
    outside the sidecar and for the exporters (which write the files)."""
    b = _batch(ctx, args["handle"])
    if b.side != "gen" or b.images is None:
        raise BadRequest(
            f"train.rollout_images: handle {args['handle']!r} holds a {b.side!r} rollout, not generated images"
        )
    images = b.images.detach().to("cpu", torch.uint8).contiguous()
    return Reply(
        {"size": int(images.shape[0]), "prompts": [b.prompts[g] for g in b.group.tolist()]}, {"images": images}
    )


@op("train.prepare_reward")
@_timed
def _op_prepare_reward(ctx, args, tensors):
    """Build (and cache) a reward scorer so a missing package or checkpoint fails before training."""
    _session(ctx).scorer(args["reward"])
    return {"reward": args["reward"]["name"]}


@op("train.update")
@_timed
def _op_update(ctx, args, tensors):
    """One optimizer step of the clipped surrogate over the given rollouts and advantages."""
    sess = _session(ctx)
    handles = args["handles"]
    if not handles:
        raise BadRequest("train.update: handles names no rollout (und and/or gen)", detail={"field": "handles"})
    sides = {}
    for side, h in handles.items():
        key = f"adv_{side}"
        if key not in tensors:
            raise BadRequest(f"train.update: missing payload {key!r} for the {side} rollout", detail={"field": key})
        hs = [h] if isinstance(h, str) else list(h)
        batches = [_batch(ctx, x) for x in hs]
        adv = tensors[key].reshape(-1)
        if adv.shape[0] != sum(b.size for b in batches):
            raise BadRequest(
                f"train.update: {key} has {adv.shape[0]} advantages for {sum(b.size for b in batches)} "
                f"{side} trajectories",
                detail={"field": key},
            )
        parts, off = [], 0
        for b in batches:  # one advantage vector per side, split over its handles in order
            parts.append((b, adv[off : off + b.size]))
            off += b.size
        sides[side] = parts
    out = sess.update(sides, args["loss"], est_seed=args["est_seed"], grad_cosine=args["grad_cosine"], check=ctx.check)
    if args["free"]:  # the last inner iteration: drop the rollouts without another round trip
        for h in handles.values():
            for x in [h] if isinstance(h, str) else h:
                ctx.handles.free(x)
    return out


@op("train.sft")
@_timed
def _op_sft(ctx, args, tensors):
    """One supervised optimizer step (CE on answers and image tokens) on the given examples."""
    sess = _session(ctx)
    sess.adapter.require("sft")
    ex = [SFTExample(e["side"], e["image_path"], e["text"], e["target"]) for e in args["examples"]]
    return sess.policy.sft_step(ex, seed=args.get("seed"))


@op("train.logprobs")
@_timed
def _op_logprobs(ctx, args, tensors):
    """Current-policy per-token log-probs of a rollout next to its old log-probs and mask."""
    sess = _session(ctx)
    b = _batch(ctx, args["handle"])
    with sess.adapter.gathered():
        logp, mask = sess.adapter.token_logprobs(b, torch.arange(b.size), est_seed=args["est_seed"], grad=False)
    return Reply(
        {"size": b.size},
        {
            "logp": logp.float().cpu(),
            "old_logp": b.old_logp_for(args["est_seed"]).float().cpu(),
            "mask": mask.to(torch.uint8).cpu(),
        },
    )


@op("train.save")
@_timed
def _op_save(ctx, args, tensors):
    """Write a resumable DCP checkpoint (model, optimizer, RNG; with ``hf`` also the HF model) to ``dir``."""
    sess = _session(ctx)
    return {"dir": sess.save(args["dir"], hf=args["hf"]), "optimizer_step": sess.policy.step_count}


@op("train.export")
@_timed
def _op_export(ctx, args, tensors):
    """Write the full model (the family's HF layout) atomically to ``dir``."""
    sess = _session(ctx)
    return {"dir": sess.export(args["dir"]), "optimizer_step": sess.policy.step_count}


@op("train.grid")
@_timed
def _op_grid(ctx, args, tensors):
    """Save a PNG grid of a generation rollout's images."""
    b = _batch(ctx, args["handle"])
    if b.images is None:
        raise BadRequest("train.grid: the handle holds no images (not a gen rollout)")
    w, h = save_grid(b.images, args["path"], args["nrow"], args["max_images"])
    return {"path": args["path"], "width": w, "height": h}


@op("models.tiny")
def _op_tiny(ctx, args, tensors):
    """Build a tiny random-init model directory with the family's registered builder."""
    return {"dir": resolve("tiny", args["family"])(args["dir"], seed=args["seed"])}


__all__ = ["TrainSession", "gen_items", "load_spec", "save_grid", "score_batch", "und_items"]
