"""Ops every sidecar has: introspection, echo, and the tensor ops the transport tests and benchmark use."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
import time

import pyarrow as pa
import torch

from .. import __version__
from ..errors import BadRequest
from ..registry import KINDS, OpContext, Reply, list_ops, load_all, names, op


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def environment_info() -> dict:
    cuda = torch.cuda.is_available()
    devices = []
    if cuda:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            devices.append({"index": i, "name": p.name, "memory": int(p.total_memory)})
    return {
        "sidecar": __version__,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "pid": os.getpid(),
        "torch": torch.__version__,
        "cuda": cuda,
        "cuda_version": torch.version.cuda,
        "devices": devices,
        "threads": torch.get_num_threads(),
        "packages": {
            p: _version(p)
            for p in (
                "transformers",
                "numpy",
                "pyzmq",
                "msgpack",
                "pyarrow",
                "safetensors",
                "pillow",
                "open_clip_torch",
                "torchvision",
                "scikit-learn",
            )
        },
    }


@op("info", doc="versions, devices, plug-ins (and the ones that failed to import), the loaded policy")
def info(ctx: OpContext, args: dict, tensors: dict) -> dict:
    failed = load_all()
    out = environment_info()
    out["ops"] = sorted(list_ops())
    out["plugins"] = {k: names(k) for k in KINDS}
    out["unavailable"] = failed
    out["handles"] = len(ctx.handles)
    sess = ctx.state.get("train")
    out["policy"] = sess.describe() if sess is not None else None
    return out


@op("echo", doc="returns its args and payloads unchanged")
def echo(ctx: OpContext, args: dict, tensors: dict) -> Reply:
    return Reply(args=args, tensors=tensors)


def _describe_table(t: pa.Table) -> dict:
    cols = {}
    for f in t.schema:
        # pyarrow turns the canonical extension metadata into an extension type on read.
        ext = f.type.extension_name if isinstance(f.type, pa.BaseExtensionType) else None
        cols[f.name] = {"type": str(f.type.storage_type if ext else f.type), "ext": ext}
    return {"rows": t.num_rows, "columns": cols}


@op("tensor.echo", doc="returns every payload; Arrow tables are re-encoded by pyarrow")
def tensor_echo(ctx: OpContext, args: dict, tensors: dict) -> Reply:
    seen = {}
    out = {}
    for name, v in tensors.items():
        if isinstance(v, pa.Table):
            seen[name] = _describe_table(v)
            if args.get("fixed_shape_tensor_check"):
                # Prove the fixed-shape columns arrive as real pyarrow tensor arrays (zero-copy ndarray).
                for f in v.schema:
                    if isinstance(f.type, pa.FixedShapeTensorType):
                        nd = v.column(f.name).combine_chunks().to_numpy_ndarray()
                        seen[name]["columns"][f.name]["ndarray_shape"] = list(nd.shape)
                        seen[name]["columns"][f.name]["ndarray_sum"] = float(nd.sum())
        else:
            seen[name] = {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
        out[name] = v
    return Reply(args={"seen": seen}, tensors=out)


@op("tensor.sum", doc="sum of every raw payload (float64); the one-way transfer probe")
def tensor_sum(ctx: OpContext, args: dict, tensors: dict) -> dict:
    sums = {}
    for name, v in tensors.items():
        if isinstance(v, pa.Table):
            raise BadRequest(f"tensor.sum: payload {name!r} is an Arrow table; send raw tensors")
        if v.dtype in (torch.float16, torch.bfloat16):
            sums[name] = float(v.float().sum())  # half-precision accumulation would round the probe
        elif v.is_floating_point():
            sums[name] = float(v.sum())  # no float64 upcast: it would cost more than the transfer probed
        else:
            total = int(v.sum(dtype=torch.int64))
            sums[name] = total if abs(total) < 2**53 else float(total)
    return {"sums": sums}


@op("tensor.recv", doc="accepts payloads and returns only their sizes (a sink for one-way throughput)")
def tensor_recv(ctx: OpContext, args: dict, tensors: dict) -> dict:
    return {
        "nbytes": {k: (v.nbytes if hasattr(v, "nbytes") else v.numel() * v.element_size()) for k, v in tensors.items()}
    }


@op("tensor.make", doc="returns a new tensor of the given dtype/shape filled with arange (the reply-direction probe)")
def tensor_make(ctx: OpContext, args: dict, tensors: dict) -> Reply:
    shape = args["shape"]
    dtype = getattr(torch, args["dtype"])
    n = 1
    for d in shape:
        n *= int(d)
    t = (
        torch.arange(n, dtype=torch.float64).to(dtype).view(shape)
        if args["fill"] == "arange"
        else torch.zeros(shape, dtype=dtype)
    )
    return Reply(tensors={"out": t})


@op("debug.sleep", doc="sleeps `seconds` in `step`-second slices, checking for cancel/deadline between slices")
def debug_sleep(ctx: OpContext, args: dict, tensors: dict) -> dict:
    seconds, step = float(args["seconds"]), float(args["step"])
    t0 = time.monotonic()
    slices = 0
    while time.monotonic() - t0 < seconds:
        ctx.check()
        ctx.progress(time.monotonic() - t0, seconds, "sleeping")
        time.sleep(min(step, max(0.0, seconds - (time.monotonic() - t0))))
        slices += 1
    return {"slept": time.monotonic() - t0, "slices": slices}


@op("debug.fail", doc="raises the requested exception (tests the error path)")
def debug_fail(ctx: OpContext, args: dict, tensors: dict) -> dict:
    if args["kind"] == "value":
        raise ValueError(args.get("msg", "requested failure"))
    raise FileNotFoundError(args.get("msg", "no such file"))


@op("debug.exit", doc="terminates the sidecar process at once (tests rank loss)")
def debug_exit(ctx: OpContext, args: dict, tensors: dict) -> dict:
    os._exit(args["code"])


@op("handles.free", doc="frees sidecar-resident objects by handle")
def handles_free(ctx: OpContext, args: dict, tensors: dict) -> dict:
    return {"freed": sum(1 for h in args["handles"] if ctx.handles.free(h))}
