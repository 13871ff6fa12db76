"""The sidecar's side of the op contract, generated from the TS declarations (``generated.py``).

Requests are checked here before any handler runs: args against the op's JSON Schema, payloads
against its declared names, dtypes and ranks. Validators are compiled on first use (fastjsonschema
turns each schema into a small Python function), so start-up pays only for the ops it serves.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import fastjsonschema

from . import generated
from .generated import *  # noqa: F401,F403 - the generated constants and records are this package's API
from .record import Record

_COMPILED: dict[tuple[str, str], Callable[[Any], Any]] = {}


def _validator(where: str, name: str, schema: dict) -> Callable[[Any], Any]:
    key = (where, name)
    fn = _COMPILED.get(key)
    if fn is None:
        fn = _COMPILED[key] = fastjsonschema.compile(schema)
    return fn


def _check(fn: Callable[[Any], Any], value: Any, what: str) -> None:
    from ..errors import BadRequest  # late: errors imports the generated codes from this package

    try:
        fn(value)
    except fastjsonschema.JsonSchemaValueException as e:
        # fastjsonschema names the path as "data.sampling.temperature"; say it as the request's field.
        path = (e.name or "data")[5:]
        where = f" in {path}" if path else ""
        names = re.findall(r"'([^']+)'", e.message)
        if e.rule == "required" and names:
            field, msg = ".".join(filter(None, [path, names[0]])), f"missing field(s) {', '.join(names)}{where}"
        elif e.rule == "additionalProperties" and names:
            field, msg = ".".join(filter(None, [path, names[0]])), f"unknown field(s) {', '.join(sorted(names))}{where}"
        else:
            field, msg = path or None, e.message.replace("data.", "", 1) if path else e.message
        raise BadRequest(f"{what}: {msg}", detail={"field": field, "rule": e.rule}) from None


def is_builtin(op: str) -> bool:
    return op in generated.OPS


def validate_args(op: str, args: Any) -> None:
    decl = generated.OPS.get(op)
    if decl is not None:
        _check(_validator("args", op, decl["args"]), args, op)


def validate_reply(op: str, args: Any) -> None:
    decl = generated.OPS.get(op)
    if decl is not None:
        _check(_validator("reply", op, decl["reply"]), args, f"{op} reply")


def _payload_kind(v: Any) -> tuple[str, str | None, int | None]:
    import torch

    if isinstance(v, torch.Tensor):
        name = str(v.dtype).replace("torch.", "")
        dt = next((k for k, (_, t) in generated.DTYPES.items() if t == name), name)
        return "raw", dt, v.dim()
    return "arrow", None, None


def validate_payloads(op: str, payloads: dict, *, reply: bool = False) -> None:
    from ..errors import BadRequest

    decl = generated.OPS.get(op)
    if decl is None:
        return
    specs = decl["reply_payloads" if reply else "payloads"]
    if specs == "any":
        return
    what = f"{op} reply" if reply else op
    extra = sorted(set(payloads) - set(specs))
    if extra:
        raise BadRequest(f"{what}: unknown payload(s) {extra}; declared: {sorted(specs)}", detail={"field": extra[0]})
    for name, spec in specs.items():
        if name not in payloads:
            if not spec.get("optional"):
                raise BadRequest(f"{what}: missing payload {name!r}", detail={"field": name})
            continue
        enc, dt, rank = _payload_kind(payloads[name])
        if spec.get("enc", "raw") != enc:
            raise BadRequest(
                f"{what}: payload {name!r} must be {spec.get('enc', 'raw')}, got {enc}", detail={"field": name}
            )
        if "dtype" in spec and dt not in spec["dtype"]:
            raise BadRequest(
                f"{what}: payload {name!r} must have dtype {' or '.join(spec['dtype'])}, got {dt}",
                detail={"field": name},
            )
        if "rank" in spec and rank != spec["rank"]:
            raise BadRequest(
                f"{what}: payload {name!r} must have rank {spec['rank']}, got {rank}", detail={"field": name}
            )


def validate_header(kind: str, header: dict) -> None:
    _check(_validator("header", kind, generated.HEADER_SCHEMAS[kind]), header, f"invalid {kind} header")


def validate_record(name: str, value: Any, what: str) -> None:
    _check(_validator("record", name, generated.RECORD_SCHEMAS[name]), value, what)


__all__ = [
    "Record",
    "is_builtin",
    "validate_args",
    "validate_header",
    "validate_payloads",
    "validate_record",
    "validate_reply",
]


def _fill(schema: dict, value: Any) -> Any:
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties", {})
        out = dict(value)
        for k, ps in props.items():
            if k in out:
                out[k] = _fill(ps, out[k])
            elif "default" in ps:
                out[k] = json.loads(json.dumps(ps["default"]))
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_fill(schema["items"], x) for x in value]
    return value


def with_defaults(op: str, args: dict) -> dict:
    """``args`` with the op's declared defaults filled in, as the TS client sends them (for in-process
    callers: tests and benches that call handlers without a controller)."""
    decl = generated.OPS.get(op)
    return _fill(decl["args"], args) if decl is not None else args
