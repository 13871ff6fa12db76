"""Payload frames: raw dense tensors and Arrow IPC streams, checked against their descriptors."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ..errors import BadRequest, TooLarge
from .constants import DTYPES, MAX_DIMS, MAX_SAFE_INT, STREAM_ALIGN

FIXED_SHAPE_TENSOR = "arrow.fixed_shape_tensor"

_TORCH = {k: getattr(torch, v[1]) for k, v in DTYPES.items()}
_FROM_TORCH = {v: k for k, v in _TORCH.items()}


def numel(shape: list[int]) -> int:
    if len(shape) > MAX_DIMS:
        raise BadRequest(f"shape has {len(shape)} dims (max {MAX_DIMS})")
    n = 1
    for d in shape:
        n *= d
        if n > MAX_SAFE_INT:
            raise TooLarge(f"shape {shape} overflows 2^53 elements")
    return n


def check_descriptors(descs: list[dict], max_message_bytes: int) -> int:
    names: set[str] = set()
    total = 0
    for d in descs:
        nm = d["nm"]
        if nm in names:
            raise BadRequest(f"two payloads named {nm!r}")
        names.add(nm)
        if d["enc"] == "raw":
            if "dt" not in d or "sh" not in d:
                raise BadRequest(f"raw payload {nm!r} needs dt and sh")
            want = numel(d["sh"]) * DTYPES[d["dt"]][0]
            if want != d["n"]:
                raise BadRequest(f"payload {nm!r}: {d['dt']}{d['sh']} is {want} bytes but n={d['n']}")
        elif "dt" in d or "sh" in d:
            raise BadRequest(f"arrow payload {nm!r} must not carry dt/sh (bf16/f16 travel raw)")
        total += d["n"]
    if total > max_message_bytes:
        raise TooLarge(f"payloads total {total} bytes, over the {max_message_bytes}-byte limit")
    return total


def stream_layout(descs: list[dict]) -> tuple[list[int], int]:
    offsets = []
    pos = 0
    for d in descs:
        pos = -(-pos // STREAM_ALIGN) * STREAM_ALIGN
        offsets.append(pos)
        pos += d["n"]
    return offsets, pos


def _address(buf: Any) -> int:
    return np.frombuffer(buf, dtype=np.uint8).ctypes.data if len(memoryview(buf)) else 0


def raw_to_tensor(desc: dict, buf: Any) -> torch.Tensor:
    """View a frame as a tensor: zero-copy when aligned and writable, otherwise one copy."""
    dt = desc["dt"]
    item = DTYPES[dt][0]
    mv = memoryview(buf).cast("B")
    if mv.nbytes != desc["n"]:
        raise BadRequest(f"payload {desc['nm']!r}: frame has {mv.nbytes} bytes, descriptor says {desc['n']}")
    shape = list(desc["sh"])
    if mv.nbytes == 0:
        return torch.empty(shape, dtype=_TORCH[dt])
    # torch.frombuffer does not check alignment (misaligned views are undefined behaviour).
    if mv.readonly or _address(mv) % item != 0:
        mv = memoryview(bytearray(mv))
    t = torch.frombuffer(mv, dtype=_TORCH[dt]).view(shape)
    if dt == "bool" and bool((t.view(torch.uint8) > 1).any()):
        raise BadRequest(f"payload {desc['nm']!r}: bool tensor holds bytes other than 0/1")
    return t


_ALLOWED = (
    pa.types.is_boolean,
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_string,
    pa.types.is_list,
    pa.types.is_fixed_size_list,
    pa.types.is_struct,
)


def _check_type(t: pa.DataType, path: str) -> None:
    if isinstance(t, pa.BaseExtensionType):
        if t.extension_name != FIXED_SHAPE_TENSOR:
            raise BadRequest(f"{path}: unknown extension type {t.extension_name!r}")
        t = t.storage_type
    if pa.types.is_dictionary(t):
        raise BadRequest(f"{path}: dictionary columns are not allowed in v1")
    if pa.types.is_large_list(t) or pa.types.is_large_string(t):
        raise BadRequest(f"{path}: 64-bit offsets (LargeList/LargeUtf8) are not allowed in v1")
    if not any(f(t) for f in _ALLOWED):
        raise BadRequest(f"{path}: Arrow type {t} is outside the v1 subset")
    if pa.types.is_fixed_size_list(t) and t.list_size <= 0:
        raise BadRequest(f"{path}: FixedSizeList size must be > 0")
    for i in range(t.num_fields):
        _check_type(t.field(i).type, f"{path}.{t.field(i).name}")


def _check_field_meta(field: pa.Field, path: str) -> None:
    meta = field.metadata or {}
    name = meta.get(b"ARROW:extension:name")
    if name is None:
        return
    name = name.decode("utf-8", "replace")
    if name != FIXED_SHAPE_TENSOR:
        raise BadRequest(f"{path}: unknown extension type {name!r}")
    if not pa.types.is_fixed_size_list(field.type):
        raise BadRequest(f"{path}: {name} must be a FixedSizeList")
    try:
        shape = json.loads(meta.get(b"ARROW:extension:metadata", b"").decode())["shape"]
    except Exception:  # noqa: BLE001
        raise BadRequest(f"{path}: invalid {name} metadata JSON") from None
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"{path}: {name} metadata needs an integer 'shape' array")
    if int(np.prod(shape)) != field.type.list_size:
        raise BadRequest(f"{path}: shape {shape} does not match list size {field.type.list_size}")


def arrow_to_table(desc: dict, buf: Any) -> pa.Table:
    what = f"payload {desc['nm']!r}"
    try:
        src = pa.BufferReader(pa.py_buffer(buf))
        reader = pa.ipc.open_stream(src)
        schema = reader.schema
        batches = list(reader)
        if src.tell() != src.size():
            raise BadRequest(f"{what}: {src.size() - src.tell()} bytes after the end of the IPC stream")
    except BadRequest:
        raise
    except pa.ArrowException as e:
        raise BadRequest(f"{what}: invalid Arrow IPC stream: {e}") from None
    except Exception as e:  # noqa: BLE001 - hostile streams must never crash the sidecar
        raise BadRequest(f"{what}: invalid Arrow IPC stream: {type(e).__name__}: {e}") from None
    for f in schema:
        _check_type(f.type, f"{what}: column {f.name!r}")
        _check_field_meta(f, f"{what}: column {f.name!r}")
    for b in batches:
        try:
            b.validate(full=True)
        except pa.ArrowException as e:
            raise BadRequest(f"{what}: invalid Arrow data: {e}") from None
        for i, col in enumerate(b.columns):
            if col.null_count:
                raise BadRequest(f"{what}: column {schema.field(i).name!r} has nulls (not allowed in v1)")
    table = pa.Table.from_batches(batches, schema=schema)
    return table


def decode_payloads(descs: list[dict], frames: list[Any]) -> dict:
    if len(frames) != len(descs):
        raise BadRequest(f"{len(descs)} payload descriptors but {len(frames)} payload frames")
    out = {}
    for d, f in zip(descs, frames):
        n = memoryview(f).nbytes
        if n != d["n"]:
            raise BadRequest(f"payload {d['nm']!r}: frame has {n} bytes, descriptor says {d['n']}")
        out[d["nm"]] = raw_to_tensor(d, f) if d["enc"] == "raw" else arrow_to_table(d, f)
    return out


def encode_payloads(payloads: dict) -> tuple[list[dict], list[Any]]:
    """Describe reply payloads: tensors travel raw (zero-copy), Arrow tables as IPC streams."""
    descs, bufs = [], []
    for nm, v in payloads.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.ascontiguousarray(v))
        if isinstance(v, torch.Tensor):
            t = v.detach()
            if t.device.type != "cpu":
                t = t.cpu()
            t = t.contiguous()
            if t.dtype not in _FROM_TORCH:
                raise BadRequest(f"reply tensor {nm!r} has unsupported dtype {t.dtype}")
            dt = _FROM_TORCH[t.dtype]
            mv = memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")
            descs.append({"nm": nm, "enc": "raw", "n": mv.nbytes, "dt": dt, "sh": list(t.shape)})
            bufs.append(mv)
        elif isinstance(v, (pa.Table, pa.RecordBatch)):
            table = v if isinstance(v, pa.Table) else pa.Table.from_batches([v])
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as w:
                w.write_table(table)
            b = sink.getvalue()
            descs.append({"nm": nm, "enc": "arrow", "n": b.size})
            bufs.append(memoryview(b))
        else:
            raise BadRequest(
                f"reply payload {nm!r} must be a torch.Tensor, numpy array or pyarrow Table, got {type(v).__name__}"
            )
    return descs, bufs
