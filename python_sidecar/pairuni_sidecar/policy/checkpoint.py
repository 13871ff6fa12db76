"""Policy checkpoints (``torch.distributed.checkpoint``, resumable at any world size) and HF export.

Layout of a policy directory (``save_policy``)::

    <dir>/policy.json   format, adapter, the world size that wrote it, optimizer step, trainable-parameter
                        digest, optimizer settings; written last, so its presence marks a complete write
    <dir>/state/        a DCP checkpoint (``.metadata`` + one ``__<rank>_0.distcp`` per rank):
                          model.*   the model's state dict (FSDP2: each rank writes its own shards)
                          extra.*   adapter state outside the model (Bagel: EMA weights, LoRA factors)
                          optim.*   AdamW state keyed by trainable-parameter name (exp_avg, exp_avg_sq, step)
                          rng.rankR each rank's torch / CUDA / numpy / python RNG states
    <dir>/model/        only with ``hf=True``: the full model in the adapter's own format
                        (``from_pretrained`` / ``load_adapter`` read it), the same as ``export_policy``

DCP stores every tensor with its global shape and the chunks each rank held, so ``load_policy`` at
any world size reads the pieces its own shards need: saved at 2 ranks, resumed at 1 or 2 (and back).
A rank of a resumed world restores the RNG of rank ``rank % saved_world`` (all ranks are seeded alike
at load, so a grown world starts from the same streams as a fresh one would). The trainer's own state
(completed steps, config) is the controller's ``trainer.json`` beside this directory
(src/train/checkpoint.ts); the optimizer step count travels in ``policy.json``.

The optimizer state is keyed by the adapter's trainable-parameter names, not by module FQN
(``get_optimizer_state_dict``), because an adapter may train parameters that live outside the model
module (Bagel's LoRA factors); with FSDP2 the state tensors are DTensors sharded like their parameters,
which DCP reshards like the model's. A parameter that never had a gradient is written with AdamW's
fresh state (step 0, zero moments): the next step computes exactly what it would from no state.

Writing is atomic: rank 0 creates a temp directory beside ``dir`` (``fsutil.atomic_dir``), every rank
writes its shards into it, rank 0 adds ``policy.json`` and renames it into place; a crash leaves the
previous directory or the new one. Every rank must see the same filesystem (DCP's file layout).
Without a process group (one sidecar) DCP runs in no-dist mode: the same files, one rank.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import warnings

import numpy as np
import torch

from ..adapters import LoadSpec, load_adapter
from ..adapters.base import CheckpointNotFound
from ..errors import BadRequest, OpFailed
from .. import dist
from ..fsutil import atomic_dir
from .step import OptimCfg, Policy

FORMAT = "pairuni-policy/2"
STATE = "state"
MODEL = "model"


class CheckpointCorrupt(OpFailed):
    """A checkpoint directory exists but cannot be read back: a shard or its index is missing,
    truncated or does not match this model (the message names the directory and what failed)."""


def _names_digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


@contextlib.contextmanager
def _dcp_quiet():
    # DCP warns that it runs without a process group at world 1: that is the intended mode here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.distributed\.checkpoint")
        yield


def _rng_bytes() -> bytes:
    # one opaque object per rank (numpy's state is a tuple DCP would try to flatten)
    buf = io.BytesIO()
    torch.save(rng_state(), buf)
    return buf.getvalue()


def _optim_state(policy: Policy) -> dict[str, dict[str, torch.Tensor]]:
    """AdamW state by trainable-parameter name; a parameter without state gets AdamW's fresh state."""
    out = {}
    for name, p in zip(policy.param_names, policy.params):
        st = policy.optimizer.state.get(p) or {}
        out[name] = {
            "step": st["step"].detach() if "step" in st else torch.tensor(0.0),
            "exp_avg": st["exp_avg"].detach() if "exp_avg" in st else torch.zeros_like(p.detach()),
            "exp_avg_sq": st["exp_avg_sq"].detach() if "exp_avg_sq" in st else torch.zeros_like(p.detach()),
        }
    return out


def _state_dict(policy: Policy) -> dict:
    """The rank's part of the checkpoint: tensors that share storage with the live ones (a DCP load
    writes into them in place)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    model = {
        k: v.detach() if isinstance(v, torch.Tensor) else v
        for k, v in get_model_state_dict(policy.adapter.model).items()
    }
    extra = {k: v.detach() for k, v in policy.adapter.extra_state().items()}
    return {"model": model, "extra": extra, "optim": _optim_state(policy)}


def _meta(policy: Policy, adapter_name: str, world: int) -> dict:
    return {
        "format": FORMAT,
        "adapter": adapter_name,
        "world": world,
        "optimizer_step": policy.step_count,
        "trainable": len(policy.param_names),
        "trainable_digest": _names_digest(policy.param_names),
        "optim": {**policy.optim_cfg.__dict__, "betas": list(policy.optim_cfg.betas)},
    }


@contextlib.contextmanager
def _world_atomic_dir(path: str):
    """``fsutil.atomic_dir`` on rank 0, its temp path shared with every rank; the rename happens only
    when every rank finished its part, and every rank learns whether it happened (a failure anywhere,
    the rename included, fails the op on every rank and no rank waits in a collective for another)."""
    w = dist.current()
    err: BaseException | None = None
    try:
        with contextlib.ExitStack() as stack:
            tmp = None
            if w.rank == 0:
                try:
                    tmp = stack.enter_context(atomic_dir(path))
                except BaseException as e:  # noqa: BLE001 - the other ranks must not wait for a temp dir
                    err = e
            tmp = dist.broadcast_object(tmp)
            if tmp is None:
                raise err or OpFailed(
                    f"rank 0 could not create a temp directory beside {path!r}", detail={"path": path}
                )
            try:
                yield tmp
            except BaseException as e:  # noqa: BLE001 - re-raised below, after the ranks agree
                err = e
            if not dist.all_ok(err is None):  # rank 0 leaves the block by raising: atomic_dir removes tmp
                raise err or OpFailed(
                    f"writing checkpoint {path!r} failed on another rank; nothing was replaced", detail={"path": path}
                )
        # rank 0 left atomic_dir normally: the new directory replaced the old one
    except BaseException as e:  # noqa: BLE001
        err = e
    if not dist.all_ok(err is None):
        raise err or OpFailed(
            f"checkpoint {path!r} was not published (rank 0 failed to rename it into place)", detail={"path": path}
        )


def save_policy(policy: Policy, adapter_name: str, path: str, *, hf: bool = False) -> str:
    """Write the policy checkpoint to ``path`` atomically (replacing an existing directory); a
    collective with several ranks. ``hf``: also write the full model to ``<path>/model``."""
    import torch.distributed.checkpoint as dcp

    path = os.path.abspath(path)
    w = dist.current()
    sd = _state_dict(policy)
    sd["rng"] = {f"rank{w.rank}": _rng_bytes()}
    with _world_atomic_dir(path) as tmp:
        with _dcp_quiet():
            dcp.save(sd, checkpoint_id=os.path.join(tmp, STATE))
        if hf:
            _write_hf(policy, os.path.join(tmp, MODEL))
        if w.rank == 0:
            with open(os.path.join(tmp, "policy.json"), "w") as f:
                json.dump(_meta(policy, adapter_name, w.size), f, indent=1)
    return path


def _write_hf(policy: Policy, path: str) -> None:
    """The full model in the adapter's format (collective with FSDP2: every rank gathers, rank 0 writes)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    w = dist.current()
    full = extra = None
    if w.distributed:
        full = get_model_state_dict(
            policy.adapter.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        # sharded extras (Bagel's EMA) are gathered by every rank, in one order; replicated ones are whole
        extra = {k: dist.full_tensor(v.detach()).cpu() for k, v in policy.adapter.extra_state().items()}
    if w.rank == 0:
        policy.adapter.save_pretrained(path, state_dict=full, extra_state=extra)


def export_policy(policy: Policy, path: str) -> str:
    """Write the full model (HF / the family's own layout) atomically to ``path``: what
    ``from_pretrained`` and ``train.load``'s ``model.path`` read. No optimizer, no RNG."""
    path = os.path.abspath(path)
    with _world_atomic_dir(path) as tmp:
        _write_hf(policy, tmp)
    return path


def read_policy_meta(path: str) -> dict:
    meta_path = os.path.join(path, "policy.json")
    if not os.path.isfile(meta_path):
        what = (
            "does not exist" if not os.path.exists(path) else "has no policy.json (an incomplete or foreign directory)"
        )
        raise CheckpointNotFound(f"checkpoint {path!r} {what}", detail={"path": path})
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointCorrupt(
            f"checkpoint {path!r}: policy.json is unreadable ({e})", detail={"path": path, "file": "policy.json"}
        ) from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt == "pairuni-policy/1":
        raise BadRequest(
            f"checkpoint {path!r} has format 'pairuni-policy/1' (an HF model directory written by an "
            f"earlier pairuni); this version resumes from {FORMAT!r} only. Its {os.path.join(path, 'model')!r} "
            "still loads as a model: start a run from it as model.path",
            detail={"path": path, "format": fmt},
        )
    if fmt != FORMAT:
        raise BadRequest(
            f"checkpoint {path!r} has format {fmt!r}, expected {FORMAT!r}", detail={"path": path, "format": fmt}
        )
    if not os.path.isfile(os.path.join(path, STATE, ".metadata")):
        raise CheckpointCorrupt(
            f"checkpoint {path!r} is incomplete: {os.path.join(STATE, '.metadata')} is missing",
            detail={"path": path, "file": f"{STATE}/.metadata"},
        )
    missing = [
        f"{STATE}/__{r}_0.distcp"
        for r in range(int(meta.get("world", 1)))
        if not os.path.isfile(os.path.join(path, STATE, f"__{r}_0.distcp"))
    ]
    if missing:
        raise CheckpointCorrupt(
            f"checkpoint {path!r} is incomplete: {', '.join(missing)} missing (written by {meta.get('world')} ranks)",
            detail={"path": path, "missing": missing},
        )
    return meta


def load_policy(adapter_name: str, spec: LoadSpec, optim: OptimCfg, resume_dir: str | None = None) -> Policy:
    """Build the adapter (from ``spec.path``) and optimizer; with ``resume_dir`` restore the model,
    adapter extras, optimizer and RNG from its DCP state (a collective with several ranks)."""
    if resume_dir is None:
        return Policy(load_adapter(adapter_name, spec), optim)
    import torch.distributed.checkpoint as dcp

    resume_dir = os.path.abspath(resume_dir)
    meta = read_policy_meta(resume_dir)
    if meta["adapter"] != adapter_name:
        raise BadRequest(f"checkpoint {resume_dir!r} was written by adapter {meta['adapter']!r}, not {adapter_name!r}")
    policy = Policy(load_adapter(adapter_name, spec), optim)
    if _names_digest(policy.param_names) != meta["trainable_digest"]:
        raise BadRequest(
            f"checkpoint {resume_dir!r} was trained with a different set of trainable parameters "
            f"({meta['trainable']} tensors) than train_modules={list(spec.train_modules)} selects "
            f"({len(policy.param_names)}); resume with the same train_modules"
        )
    w = dist.current()
    sd = _state_dict(policy)
    # the optimizer state is loaded into fresh AdamW state tensors, installed below
    src = f"rank{w.rank % int(meta['world'])}"
    sd["rng"] = {src: b""}  # replaced by the stored bytes
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        with _dcp_quiet():
            dcp.load(sd, checkpoint_id=os.path.join(resume_dir, STATE))
    # CheckpointException (every rank's failures, gathered) derives from BaseException, not Exception
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - name the directory
        raise CheckpointCorrupt(
            f"checkpoint {resume_dir!r}: its DCP state ({STATE}/) cannot be read into this "
            f"{adapter_name} model: {_first_line(e)}",
            detail={"path": resume_dir},
        ) from e
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(policy.adapter.model, sd["model"])
    for name, p in zip(policy.param_names, policy.params):
        policy.optimizer.state[p] = dict(sd["optim"][name])
    for g in policy.optimizer.param_groups:  # the run's settings win over the stored ones
        g["lr"], g["betas"], g["eps"], g["weight_decay"] = optim.lr, tuple(optim.betas), optim.eps, optim.weight_decay
    set_rng_state(torch.load(io.BytesIO(sd["rng"][src]), weights_only=False))
    policy.step_count = int(meta["optimizer_step"])
    policy.adapter.loaded_from = resume_dir
    return policy


def _first_line(e: BaseException) -> str:
    # DCP's CheckpointException lists each rank's traceback; the first failure's message is enough
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict) and failures:
        rank, inner = next(iter(failures.items()))
        inner = inner[0] if isinstance(inner, tuple) else inner
        return (
            f"rank {rank}: {type(inner).__name__}: {str(inner).strip().splitlines()[0] if str(inner).strip() else ''}"
        )
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"
