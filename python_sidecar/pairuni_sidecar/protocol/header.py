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
    DTYPES,
    KIND_NAMES,
    KINDS,
    KNOWN_FLAGS,
    MAGIC,
    MAX_DIMS,
    MAX_SAFE_INT,
    PREAMBLE_BYTES,
    WIRE_MAJOR,
    WIRE_MINOR,
)
from ..errors import ERROR_CODES


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
    except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.StackError, msgpack.exceptions.FormatError, UnicodeDecodeError, TypeError) as e:
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


# ----------------------------------------------------------------------------- schemas

def _uint(h: dict, key: str, *, required: bool = True, minimum: int = 0, path: str = "") -> None:
    if key not in h:
        if required:
            raise BadRequest(f"{path}{key}: required")
        return
    v = h[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum or v > MAX_SAFE_INT:
        raise BadRequest(f"{path}{key}: expected an integer >= {minimum}")


def _str(h: dict, key: str, *, required: bool = True, path: str = "", max_len: int = 1 << 20) -> None:
    if key not in h:
        if required:
            raise BadRequest(f"{path}{key}: required")
        return
    if not isinstance(h[key], str) or (required and not h[key]) or len(h[key]) > max_len:
        raise BadRequest(f"{path}{key}: expected a string")


def _map(h: dict, key: str, path: str = "") -> None:
    if key in h and not isinstance(h[key], dict):
        raise BadRequest(f"{path}{key}: expected a map")


def validate_desc(d: Any, i: int) -> None:
    p = f"b[{i}]."
    if not isinstance(d, dict):
        raise BadRequest(f"b[{i}]: expected a map")
    _str(d, "nm", path=p, max_len=256)
    if d.get("enc") not in ("raw", "arrow"):
        raise BadRequest(f"{p}enc: expected 'raw' or 'arrow'")
    _uint(d, "n", path=p)
    if "dt" in d and d["dt"] not in DTYPES:
        raise BadRequest(f"{p}dt: unknown dtype {d['dt']!r}")
    if "sh" in d:
        sh = d["sh"]
        if not isinstance(sh, list) or len(sh) > MAX_DIMS or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_SAFE_INT for x in sh):
            raise BadRequest(f"{p}sh: expected a list of at most {MAX_DIMS} non-negative integers")


def _payload_fields(h: dict) -> None:
    _map(h, "a")
    if "b" in h:
        if not isinstance(h["b"], list) or len(h["b"]) > 4096:
            raise BadRequest("b: expected a list of at most 4096 descriptors")
        for i, d in enumerate(h["b"]):
            validate_desc(d, i)
    if "st" in h:
        st = h["st"]
        if not isinstance(st, dict):
            raise BadRequest("st: expected a map")
        _uint(st, "sid", path="st.")
        _uint(st, "tot", path="st.")


def validate(kind: str, h: dict) -> None:
    if kind == "hello":
        w = h.get("wire")
        if not (isinstance(w, list) and len(w) == 2 and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in w)):
            raise BadRequest("wire: expected [min, max]")
        _uint(h, "minor")
        if not isinstance(h.get("caps"), list):
            raise BadRequest("caps: expected a list")
        _uint(h, "rank")
        _uint(h, "world", minimum=1)
        _str(h, "inc", max_len=128)
    elif kind == "welcome":
        _uint(h, "major")
        _uint(h, "minor")
        _str(h, "run", required=False)
        _uint(h, "hb_ms", minimum=10)
        _uint(h, "dead_ms", minimum=100)
        lim = h.get("limits")
        if not isinstance(lim, dict):
            raise BadRequest("limits: expected a map")
        _uint(lim, "chunk", minimum=1024, path="limits.")
        _uint(lim, "max_msg", path="limits.")
        _uint(lim, "window", minimum=1024, path="limits.")
        _uint(lim, "max_hdr", minimum=1024, path="limits.")
    elif kind == "req":
        _uint(h, "id")
        _str(h, "op", max_len=256)
        _uint(h, "dl", required=False)
        _payload_fields(h)
    elif kind == "res":
        _uint(h, "re")
        _payload_fields(h)
    elif kind == "err":
        _uint(h, "re", required=False)
        e = h.get("err")
        if not isinstance(e, dict) or e.get("code") not in ERROR_CODES or not isinstance(e.get("msg"), str):
            raise BadRequest("err: expected {code, msg} with a known code")
    elif kind == "cancel":
        _uint(h, "re")
    elif kind == "credit":
        _uint(h, "n", minimum=1)
    elif kind == "chunk":
        _uint(h, "sid")
        _uint(h, "seq")
        _uint(h, "off")
        if "last" in h and not isinstance(h["last"], bool):
            raise BadRequest("last: expected a boolean")
    elif kind == "prog":
        _uint(h, "re")
    # hb, bye: all fields optional
