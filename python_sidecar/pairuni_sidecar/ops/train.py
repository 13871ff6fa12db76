"""PairGRPO training ops. Logic lives in plain functions (``TrainSession``, ``parse_*``, ``score_batch``,
``save_grid``) that pytest and the in-process bench call directly; the ``@op`` wrappers are thin.

Wire ops (args are small JSON-like maps; heavy tensors stay here, referenced by rollout handles):

- ``train.load``       {adapter, model_dir, device?, autocast?, train_modules?, gradient_checkpointing?,
                        ref_model_dir?, options?, optim?: {lr, betas, eps, weight_decay, max_grad_norm},
                        resume_dir?}                          -> adapter facts + optimizer_step
- ``train.rollout``    {side: und|gen, items, n, sampling?}   -> {handle, size, tokens, lengths, texts?}
                        und items: {image_path, text}; gen items: {prompt}
- ``train.prepare_reward`` {reward, config?}                  -> {} (build the scorer now: fail fast)
- ``train.reward``     {handle, reward, config?}              -> tensors {rewards: f32 (B,)}
- ``train.update``     {handles: {und?, gen?}, loss?, est_seed?, micro_batch?, grad_cosine?, free?}
                        + tensors {adv_und?, adv_gen?: f32 (B,)}  -> metrics
- ``train.logprobs``   {handle}                               -> tensors {logp, old_logp, mask} (cross-checks)
- ``train.save``       {dir}                                  -> {dir} (atomic policy directory)
- ``train.grid``       {handle, path, nrow?, max_images?}     -> {path, width, height} (PNG sample grid)
- ``train.free``       {handles}                              -> {freed}
- ``train.tiny_janus`` {dir, seed?}                           -> {dir} (tiny random-init model for tests)
- ``train.info``       {}                                     -> adapters, rewards, loaded policy

Every reply carries ``elapsed_s`` (time spent inside the op) so the controller can separate compute
from transport.
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from typing import Any, Callable

import torch

from ..adapters import GenItem, LoadSpec, RolloutBatch, SamplingCfg, UndItem, list_adapters
from ..adapters.base import AdapterConfigError
from ..errors import BadRequest
from ..imaging import save_grid
from ..policy import LossCfg, NonFiniteError, OptimCfg, Policy, SideInput, load_policy, save_policy
from ..registry import Reply, op, require
from ..rewards import list_rewards, make_reward

# -- argument parsing --------------------------------------------------------------------------


def _pick(d: dict, allowed: set[str], what: str) -> dict:
    if not isinstance(d, dict):
        raise BadRequest(f"{what} must be a map, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise BadRequest(f"{what}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    return d


def parse_load_args(args: dict) -> tuple[str, LoadSpec, OptimCfg, str | None]:
    _pick(args, {"adapter", "model_dir", "device", "autocast", "train_modules", "gradient_checkpointing",
                 "ref_model_dir", "options", "optim", "resume_dir", "seed"}, "train.load")
    name = require(args, "adapter", str, op_name="train.load")
    model_dir = require(args, "model_dir", str, op_name="train.load")
    spec = LoadSpec(
        model_dir=model_dir,
        device=str(args.get("device", "auto")),
        autocast=str(args.get("autocast", "auto")),
        train_modules=tuple(args.get("train_modules", ("language_model",))),
        gradient_checkpointing=bool(args.get("gradient_checkpointing", True)),
        ref_model_dir=args.get("ref_model_dir") or None,
        options=dict(args.get("options") or {}),
    )
    o = _pick(dict(args.get("optim") or {}), {"lr", "betas", "eps", "weight_decay", "max_grad_norm"}, "train.load optim")
    optim = OptimCfg(
        lr=float(o.get("lr", 1e-6)),
        betas=tuple(float(b) for b in o.get("betas", (0.9, 0.999))),
        eps=float(o.get("eps", 1e-8)),
        weight_decay=float(o.get("weight_decay", 0.0)),
        max_grad_norm=float(o.get("max_grad_norm", 1.0)),
    ).validate()
    resume = args.get("resume_dir") or None
    return name, spec, optim, resume


def parse_sampling(d: dict | None) -> SamplingCfg:
    d = _pick(dict(d or {}), {"temperature", "max_new_tokens", "cfg_weight", "gen_logp", "old_logp", "seed"}, "sampling")
    s = SamplingCfg(**{k: (str(v) if k in ("gen_logp", "old_logp") else (int(v) if k in ("max_new_tokens", "seed") else float(v)))
                       for k, v in d.items()})
    return s.validate()


def parse_items(side: str, items: Any) -> list[UndItem] | list[GenItem]:
    if not isinstance(items, list) or not items:
        raise BadRequest(f"train.rollout: items must be a non-empty list, got {type(items).__name__}")
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise BadRequest(f"train.rollout: items[{i}] must be a map")
        if side == "und":
            if not isinstance(it.get("image_path"), str) or not isinstance(it.get("text"), str):
                raise BadRequest(f"train.rollout: und items[{i}] needs string fields image_path and text")
            out.append(UndItem(it["image_path"], it["text"]))
        else:
            if not isinstance(it.get("prompt"), str) or not it["prompt"]:
                raise BadRequest(f"train.rollout: gen items[{i}] needs a non-empty string field prompt")
            out.append(GenItem(it["prompt"]))
    return out


def parse_loss(d: dict | None) -> LossCfg:
    d = _pick(dict(d or {}), {"eps_low", "eps_high", "beta", "agg", "norm"}, "loss")
    return LossCfg(
        eps_low=float(d.get("eps_low", 0.2)), eps_high=float(d.get("eps_high", 0.2)), beta=float(d.get("beta", 0.0)),
        agg=str(d.get("agg", "seq_mean")), norm=str(d.get("norm", "side")),
    ).validate()


# -- rewards -----------------------------------------------------------------------------------

_REWARD_IMPORT_ERRORS: dict[str, str] = {}


def load_reward_modules() -> dict[str, str]:
    """Import every module of ``pairuni_sidecar.rewards`` (and the toy rewards) so ``@reward`` runs."""
    from .. import rewards as pkg

    importlib.import_module("pairuni_sidecar.policy.toy_rewards")
    for m in pkgutil.iter_modules(pkg.__path__):
        name = f"{pkg.__name__}.{m.name}"
        if name in _REWARD_IMPORT_ERRORS:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - reported in the unknown-reward error and train.info
            _REWARD_IMPORT_ERRORS[name] = f"{type(e).__name__}: {e}"
    return dict(_REWARD_IMPORT_ERRORS)


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
        raise NonFiniteError(f"reward {reward_name!r} returned NaN/inf for trajectories {bad[:8]} "
                             f"(prompts: {[prompts[i] for i in bad[:3]]}); no advantage was computed",
                             detail={"reward": reward_name, "rows": bad})
    return r


# -- the session -------------------------------------------------------------------------------


class TrainSession:
    """A loaded policy plus cached reward scorers (one per process, kept in ``ctx.state``)."""

    def __init__(self, args: dict) -> None:
        self.adapter_name, self.spec, self.optim, resume = parse_load_args(args)
        if "seed" in args:
            torch.manual_seed(int(args["seed"]))
        self.policy: Policy = load_policy(self.adapter_name, self.spec, self.optim, resume)
        self.scorers: dict[str, Any] = {}

    @property
    def adapter(self):
        return self.policy.adapter

    def describe(self) -> dict:
        return {**self.adapter.describe(), "optimizer_step": self.policy.step_count}

    def rollout(self, side: str, items: Any, n: int, sampling: dict | None) -> RolloutBatch:
        if side not in ("und", "gen"):
            raise BadRequest(f"train.rollout: side must be 'und' or 'gen', got {side!r}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise BadRequest(f"train.rollout: n must be an integer >= 1, got {n!r}")
        parsed = parse_items(side, items)
        s = parse_sampling(sampling)
        if side == "und":
            return self.adapter.und_rollout(parsed, n, s)  # type: ignore[arg-type]
        return self.adapter.gen_rollout(parsed, n, s)  # type: ignore[arg-type]

    def scorer(self, name: str, config: dict | None):
        import json

        key = f"{name}:{json.dumps(config or {}, sort_keys=True)}"
        if key not in self.scorers:
            errors = load_reward_modules()
            if name not in list_rewards():
                hint = f"; reward modules that failed to import: {errors}" if errors else ""
                raise BadRequest(f"unknown reward {name!r}; registered: {list_rewards()}{hint}")
            self.scorers[key] = make_reward(name, config or {})
        return self.scorers[key]

    def reward(self, batch: RolloutBatch, name: str, config: dict | None) -> torch.Tensor:
        return score_batch(self.scorer(name, config), batch, name)

    def update(self, sides: dict[str, tuple[RolloutBatch, torch.Tensor]], loss: dict | None, *, est_seed: int = 0,
               micro_batch: int = 8, grad_cosine: bool = False, check: Callable[[], None] | None = None) -> dict:
        cfg = parse_loss(loss)
        inputs = []
        for side in ("und", "gen"):  # fixed order: und first (grad cosine splits after it)
            if side in sides:
                batch, adv = sides[side]
                if batch.side != side:
                    raise BadRequest(f"train.update: handle given for {side!r} holds a {batch.side!r} rollout")
                inputs.append(SideInput(batch, torch.as_tensor(adv, dtype=torch.float32).reshape(-1)))
        return self.policy.update(inputs, cfg, est_seed=est_seed, micro_batch=micro_batch, grad_cosine=grad_cosine,
                                  check=check)

    def save(self, path: str) -> str:
        return save_policy(self.policy, self.adapter_name, path)


# -- op wrappers -------------------------------------------------------------------------------


def _session(ctx) -> TrainSession:
    s = ctx.state.get("train")
    if s is None:
        raise BadRequest("no policy loaded in this sidecar: call train.load first")
    return s


def _batch(ctx, handle: Any) -> RolloutBatch:
    if not isinstance(handle, str):
        raise BadRequest(f"rollout handle must be a string, got {type(handle).__name__}")
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
    """Load (or resume) the policy to train; replaces a previously loaded one."""
    old = ctx.state.pop("train", None)
    for h in ctx.state.pop("train.handles", []):
        ctx.handles.free(h)
    del old
    sess = TrainSession(args)
    ctx.state["train"] = sess
    ctx.state["train.handles"] = []
    return sess.describe()


@op("train.rollout")
@_timed
def _op_rollout(ctx, args, tensors):
    """Sample K trajectories per item on one side; the batch stays here under a handle."""
    sess = _session(ctx)
    side = require(args, "side", str, op_name="train.rollout")
    n = require(args, "n", int, op_name="train.rollout")
    ctx.progress(0, 1, f"{side} rollout", force=True)
    b = sess.rollout(side, args.get("items"), n, args.get("sampling"))
    h = ctx.handles.put(b, prefix=f"rollout-{side}")
    ctx.state.setdefault("train.handles", []).append(h)
    out = {"handle": h, "side": side, "size": b.size, "tokens": b.num_tokens,
           "lengths": [int(x) for x in b.out_mask.sum(-1).tolist()]}
    if b.texts is not None:
        out["texts"] = b.texts
    return out


@op("train.reward")
@_timed
def _op_reward(ctx, args, tensors):
    """Score a generation rollout with a registered reward."""
    sess = _session(ctx)
    b = _batch(ctx, args.get("handle"))
    name = require(args, "reward", str, op_name="train.reward")
    r = sess.reward(b, name, args.get("config"))
    return Reply({"size": int(r.shape[0])}, {"rewards": r})


@op("train.prepare_reward")
@_timed
def _op_prepare_reward(ctx, args, tensors):
    """Build (and cache) a reward scorer so a missing package or checkpoint fails before training."""
    sess = _session(ctx)
    name = require(args, "reward", str, op_name="train.prepare_reward")
    sess.scorer(name, args.get("config"))
    return {"reward": name}


@op("train.update")
@_timed
def _op_update(ctx, args, tensors):
    """One optimizer step of the clipped surrogate over the given rollouts and advantages."""
    sess = _session(ctx)
    handles = require(args, "handles", dict, op_name="train.update")
    sides = {}
    for side, h in handles.items():
        if side not in ("und", "gen"):
            raise BadRequest(f"train.update: handles keys must be 'und'/'gen', got {side!r}")
        key = f"adv_{side}"
        if key not in tensors:
            raise BadRequest(f"train.update: missing tensor {key!r} for the {side} rollout")
        sides[side] = (_batch(ctx, h), tensors[key])
    mb = int(args.get("micro_batch", 8))
    out = sess.update(sides, args.get("loss"), est_seed=int(args.get("est_seed", 0)), micro_batch=mb,
                      grad_cosine=bool(args.get("grad_cosine", False)), check=ctx.check)
    if args.get("free"):  # the last inner iteration: drop the rollouts without another round trip
        live = ctx.state.get("train.handles", [])
        for h in handles.values():
            ctx.handles.free(h)
            if h in live:
                live.remove(h)
    return out


@op("train.logprobs")
@_timed
def _op_logprobs(ctx, args, tensors):
    """Current-policy per-token log-probs of a rollout next to its old log-probs and mask."""
    sess = _session(ctx)
    b = _batch(ctx, args.get("handle"))
    logp, mask = sess.adapter.token_logprobs(b, torch.arange(b.size), est_seed=int(args.get("est_seed", 0)), grad=False)
    return Reply({"size": b.size}, {"logp": logp.float().cpu(), "old_logp": b.old_logp.float().cpu(),
                                     "mask": mask.to(torch.uint8).cpu()})


@op("train.save")
@_timed
def _op_save(ctx, args, tensors):
    """Write the policy (HF model dir + optimizer + RNG) atomically to ``dir``."""
    sess = _session(ctx)
    d = require(args, "dir", str, op_name="train.save")
    return {"dir": sess.save(d), "optimizer_step": sess.policy.step_count}


@op("train.grid")
@_timed
def _op_grid(ctx, args, tensors):
    """Save a PNG grid of a generation rollout's images."""
    b = _batch(ctx, args.get("handle"))
    if b.images is None:
        raise BadRequest("train.grid: the handle holds no images (not a gen rollout)")
    path = require(args, "path", str, op_name="train.grid")
    w, h = save_grid(b.images, path, int(args.get("nrow", 4)), int(args.get("max_images", 16)))
    return {"path": path, "width": w, "height": h}


@op("train.free")
@_timed
def _op_free(ctx, args, tensors):
    """Drop rollout handles."""
    hs = args.get("handles") or []
    if not isinstance(hs, list):
        raise BadRequest("train.free: handles must be a list")
    live = ctx.state.get("train.handles", [])
    freed = 0
    for h in hs:
        if isinstance(h, str) and ctx.handles.free(h):
            freed += 1
            if h in live:
                live.remove(h)
    return {"freed": freed}


@op("train.tiny_janus")
@_timed
def _op_tiny(ctx, args, tensors):
    """Build a tiny random-init Janus model directory (tests, examples, benches)."""
    from ..adapters.tiny import build_tiny_janus

    d = require(args, "dir", str, op_name="train.tiny_janus")
    return {"dir": build_tiny_janus(d, seed=int(args.get("seed", 0)))}


@op("train.info", idempotent=True)
@_timed
def _op_info(ctx, args, tensors):
    """Adapters, rewards and the loaded policy (if any)."""
    errors = load_reward_modules()
    s = ctx.state.get("train")
    return {"adapters": list_adapters(), "rewards": list_rewards(), "reward_import_errors": errors,
            "policy": s.describe() if s is not None else None}


__all__ = [
    "AdapterConfigError", "TrainSession", "load_reward_modules", "parse_items", "parse_load_args", "parse_loss",
    "parse_sampling", "save_grid", "score_batch",
]
