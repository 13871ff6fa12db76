"""Policy checkpoints: an HF-format model directory plus optimizer and RNG state, written atomically.

Layout of a policy directory::

    <dir>/model/            save_pretrained output (fp32 master weights + tokenizer): from_pretrained loads it
    <dir>/optimizer.pt      AdamW state, full tensors keyed by parameter name (``get_optimizer_state_dict``)
    <dir>/rng.pt            torch (CPU + CUDA), numpy and python RNG states
    <dir>/policy.json       adapter name, optimizer step count, trainable-parameter names, optimizer settings

``save_policy`` writes through ``fsutil.atomic_dir``, so a crash leaves either the previous directory or
the new one, never a half-written one.

With several ranks (FSDP2) saving is a collective: every rank gathers the full model and optimizer
state (``torch.distributed.checkpoint.state_dict``, CPU offload) and rank 0 writes the same layout, so
a checkpoint is an ordinary HF directory and resumes at any world size (the shards are rebuilt at load).
"""
from __future__ import annotations

import hashlib
import json
import dataclasses
import os
import random

import numpy as np
import torch

from ..adapters import LoadSpec, load_adapter
from ..adapters.base import CheckpointNotFound
from ..errors import BadRequest
from .. import dist
from ..fsutil import atomic_dir
from .step import OptimCfg, Policy

FORMAT = "pairuni-policy/1"


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


def _sd_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def save_policy(policy: Policy, adapter_name: str, path: str) -> str:
    """Write the policy to ``path`` atomically (replacing an existing directory); return ``path``."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    path = os.path.abspath(path)
    model = policy.adapter.model
    world = dist.current()
    # collectives with FSDP2: every rank takes part, rank 0 writes
    full = get_model_state_dict(model, options=_sd_options()) if world.distributed else None
    optim = get_optimizer_state_dict(model, policy.optimizer, options=_sd_options())
    if world.rank != 0:
        dist.barrier()
        return path
    with atomic_dir(path) as tmp:
        policy.adapter.save_pretrained(os.path.join(tmp, "model"), state_dict=full)
        torch.save(optim, os.path.join(tmp, "optimizer.pt"))
        torch.save(rng_state(), os.path.join(tmp, "rng.pt"))
        meta = {
            "format": FORMAT,
            "adapter": adapter_name,
            "optimizer_step": policy.step_count,
            "trainable": len(policy.param_names),
            "trainable_digest": _names_digest(policy.param_names),
            "optim": {**policy.optim_cfg.__dict__, "betas": list(policy.optim_cfg.betas)},
        }
        with open(os.path.join(tmp, "policy.json"), "w") as f:
            json.dump(meta, f, indent=1)
    dist.barrier()
    return path


def read_policy_meta(path: str) -> dict:
    meta_path = os.path.join(path, "policy.json")
    if not os.path.isfile(meta_path):
        raise CheckpointNotFound(f"checkpoint {path!r} has no policy.json (missing or incomplete checkpoint)")
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise BadRequest(f"checkpoint {path!r} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_policy(adapter_name: str, spec: LoadSpec, optim: OptimCfg, resume_dir: str | None = None) -> Policy:
    """Build the adapter and optimizer; with ``resume_dir`` load weights, optimizer and RNG from it."""
    if resume_dir is None:
        return Policy(load_adapter(adapter_name, spec), optim)
    meta = read_policy_meta(resume_dir)
    if meta["adapter"] != adapter_name:
        raise BadRequest(f"checkpoint {resume_dir!r} was written by adapter {meta['adapter']!r}, not {adapter_name!r}")
    spec = dataclasses.replace(spec, path=os.path.join(resume_dir, "model"))
    policy = Policy(load_adapter(adapter_name, spec), optim)
    if _names_digest(policy.param_names) != meta["trainable_digest"]:
        raise BadRequest(f"checkpoint {resume_dir!r} was trained with a different set of trainable parameters "
                         f"({meta['trainable']} tensors) than train_modules={list(spec.train_modules)} selects "
                         f"({len(policy.param_names)}); resume with the same train_modules")
    state = torch.load(os.path.join(resume_dir, "optimizer.pt"), map_location="cpu", weights_only=False)
    if all(isinstance(k, int) for k in state.get("state", {})):  # written by torch's state_dict (one rank, older runs)
        policy.optimizer.load_state_dict(state)
    else:  # full tensors by parameter name: each rank keeps its shard
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        from torch.distributed.checkpoint.state_dict import StateDictOptions

        # strict=False: a parameter that never had a gradient (e.g. every und group had zero variance)
        # has no AdamW state yet, exactly as in the run that saved it
        set_optimizer_state_dict(policy.adapter.model, policy.optimizer, state,
                                 options=StateDictOptions(full_state_dict=True, cpu_offload=True, strict=False))
    for g in policy.optimizer.param_groups:  # the run's settings win over the stored ones
        g["lr"], g["betas"], g["eps"], g["weight_decay"] = optim.lr, tuple(optim.betas), optim.eps, optim.weight_decay
    set_rng_state(torch.load(os.path.join(resume_dir, "rng.pt"), weights_only=False))
    policy.step_count = int(meta["optimizer_step"])
    return policy
