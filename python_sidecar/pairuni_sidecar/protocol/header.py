"""Header frames: 8-byte preamble + one canonical msgpack map, validated per kind.

Canonical = sorted keys, minimal integers, floats as float64 only when not integral. Both sides
encode this way, so identical headers are identical bytes (protocols/vectors checks it), and a
receiver can reject duplicate/unsorted keys by re-encoding.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

from ..errors import BadRequest, TooLarge, UnsupportedVersion
from .constants import (
    KIND_NAMES,
    KINDS,
    KNOWN_FLAGS,
    MAGIC,
    MAX_SAFE_INT,
    PREAMBLE_BYTES,
    WIRE_MAJOR,
    WIRE_MINOR,
)
from ..contract import validate_header


def canonical(v: Any, _depth: int = 0) -> Any:
    """Normalise a value so that msgpack encodes it exactly as @msgpack/msgpack with sortKeys does."""
    if _depth > 32:
        raise BadRequest("header nesting deeper than 32")
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        if abs(v) > MAX_SAFE_INT:
            raise BadRequest(f"integer {v} beyond 2^53 in header")
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise BadRequest("non-finite number in header")
        if v.is_integer() and abs(v) <= MAX_SAFE_INT:
            return int(v)
        return v
    if isinstance(v, dict):
        out = {}
        for k in sorted(v):
            if not isinstance(k, str):
                raise BadRequest(f"header map key must be a string, got {type(k).__name__}")
            out[k] = canonical(v[k], _depth + 1)
        return out
    if isinstance(v, (list, tuple)):
        return [canonical(x, _depth + 1) for x in v]
    # numpy / torch scalars are common in handler replies
    if hasattr(v, "item") and callable(v.item):
        return canonical(v.item(), _depth)
    raise BadRequest(f"unsupported value of type {type(v).__name__} in header")


def encode_body(header: dict) -> bytes:
    return msgpack.packb(canonical(header), use_bin_type=True)


def encode_header_frame(kind: str, header: dict, flags: int = 0) -> bytes:
    return MAGIC + bytes((WIRE_MAJOR, WIRE_MINOR, KINDS[kind], flags)) + encode_body(header)


def parse_preamble(frame: bytes | memoryview) -> tuple[str, int, int, int]:
    if len(frame) < PREAMBLE_BYTES:
        raise BadRequest(f"header frame of {len(frame)} bytes is shorter than the 8-byte preamble")
    pre = bytes(frame[:PREAMBLE_BYTES])
    if pre[:4] != MAGIC:
        raise BadRequest("bad magic: not a pairuni frame")
    major, minor, kind_code, flags = pre[4], pre[5], pre[6], pre[7]
    if major != WIRE_MAJOR:
        raise UnsupportedVersion(f"wire major {major} is not supported (this side speaks {WIRE_MAJOR})")
    kind = KIND_NAMES.get(kind_code)
    if kind is None:
        raise BadRequest(f"unknown message kind {kind_code}")
    if flags & ~KNOWN_FLAGS:
        raise BadRequest(f"unknown flag bits 0x{flags & ~KNOWN_FLAGS:x}")
    return kind, flags, major, minor


def _check_plain(v: Any, depth: int, path: str) -> None:
    if depth > 32:
        raise BadRequest(f"header nesting deeper than 32 at {path}")
    if v is None or isinstance(v, (bool, str)):
        return
    if isinstance(v, int):
        if abs(v) > MAX_SAFE_INT:
            raise BadRequest(f"integer beyond 2^53 in header at {path}")
        return
    if isinstance(v, float):
        if not math.isfinite(v):
            raise BadRequest(f"non-finite number in header at {path}")
        return
    if isinstance(v, list):
        for i, x in enumerate(v):
            _check_plain(x, depth + 1, f"{path}[{i}]")
        return
    if isinstance(v, dict):
        for k, x in v.items():
            _check_plain(x, depth + 1, f"{path}.{k}")
        return
    if isinstance(v, bytes):
        raise BadRequest(f"binary value in header at {path}")
    raise BadRequest(f"msgpack extension or unsupported type {type(v).__name__} in header at {path}")


def _ext_hook(code: int, data: bytes) -> Any:
    raise BadRequest(f"msgpack extension type {code} in header")


def decode_header_frame(frame: bytes | memoryview, max_header_bytes: int) -> tuple[str, int, int, dict]:
    """Parse and validate a header frame; returns (kind, flags, minor, header). Raises SidecarError subclasses."""
    kind, flags, _major, minor = parse_preamble(frame)
    body = bytes(frame[PREAMBLE_BYTES:])
    if len(body) > max_header_bytes:
        raise TooLarge(f"header of {len(body)} bytes exceeds the {max_header_bytes}-byte limit")
    if not body:
        raise BadRequest("empty msgpack header")
    try:
        value = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            ext_hook=_ext_hook,
            max_str_len=max_header_bytes,
            max_bin_len=0,
            max_array_len=65536,
            max_map_len=4096,
            max_ext_len=0,
        )
    except BadRequest:
        raise
    except (
        ValueError,
        msgpack.exceptions.ExtraData,
        msgpack.exceptions.StackError,
        msgpack.exceptions.FormatError,
        UnicodeDecodeError,
        TypeError,
    ) as e:
        raise BadRequest(f"malformed msgpack header: {type(e).__name__}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any unpacker failure is a bad frame, never a crash
        raise BadRequest(f"malformed msgpack header: {type(e).__name__}: {e}") from None
    if not isinstance(value, dict):
        raise BadRequest("msgpack header root must be a map")
    _check_plain(value, 0, "$")
    if encode_body(value) != body:
        raise BadRequest("header is not canonical msgpack (duplicate or unsorted keys, or non-minimal encoding)")
    validate(kind, value)
    return kind, flags, minor, value


def validate(kind: str, h: dict) -> None:
    """The kind's header schema, generated from src/protocol/header.ts (one declaration for both sides)."""
    validate_header(kind, h)
