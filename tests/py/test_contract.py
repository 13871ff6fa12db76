"""The sidecar's side of the contract (src/contract/*.ts, generated into pairuni_sidecar.contract):
no default of its own for a declared field, requests checked at the boundary, names in errors."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import pairuni_sidecar
from pairuni_sidecar.contract import generated, validate_args, validate_reply, with_defaults
from pairuni_sidecar.contract.record import Record
from pairuni_sidecar.errors import BadRequest

PKG = Path(pairuni_sidecar.__file__).parent


def _declared_fields() -> set[str]:
    """Every field name the TS declarations give a default: config records and op arguments."""
    names: set[str] = set()

    def walk(schema: dict) -> None:
        for k, ps in (schema.get("properties") or {}).items():
            if "default" in ps:
                names.add(k)
            if isinstance(ps, dict):
                walk(ps)

    for s in generated.RECORD_SCHEMAS.values():
        walk(s)
    for d in generated.OPS.values():
        walk(d["args"])
    return names


def _modules():
    for m in pkgutil.walk_packages([str(PKG)], "pairuni_sidecar."):
        # ShapesWorld's pretraining recipe and prompt format are declared once, in Python (the toy
        # world's own script config; `shapesworld.pretrain` takes them as a free-form map), and share
        # a few names (seed, und_template) with the contract without being the same fields.
        if m.name.endswith("__main__") or m.name == "pairuni_sidecar.contract.generated" or ".shapesworld" in m.name:
            continue
        try:
            yield importlib.import_module(m.name)
        except ImportError:  # an optional dependency (open_clip, timm): nothing of ours to check there
            continue


def test_generated_records_carry_exactly_the_declared_defaults():
    for name, schema in generated.RECORD_SCHEMAS.items():
        cls = getattr(generated, name)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(fields) == set(schema["properties"]), name
        for k, ps in schema["properties"].items():
            f = fields[k]
            has = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            if "default" in ps:
                got = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                assert got == ps["default"], (name, k)
            elif k in schema.get("required", []):
                assert not has, (name, k)


def test_no_hand_written_default_competes_with_a_declared_one():
    declared = _declared_fields()
    assert {"eps_low", "lr", "micro_batch", "old_logp", "temperature", "batch_size"} <= declared
    offenders = []
    for mod in _modules():
        for obj in vars(mod).values():
            if not (isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == mod.__name__):
                continue
            own = obj.__dict__.get("__annotations__", {})
            for f in dataclasses.fields(obj):
                has = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                if f.name in own and f.name in declared and has and not issubclass(obj, Record):
                    offenders.append(f"{mod.__name__}.{obj.__name__}.{f.name}")
    # Handlers read validated requests; `args.get("x", default)` would be a second home for x's default.
    pattern = re.compile(r"""args\.get\(\s*["'](\w+)["']\s*,""")
    for path in (PKG / "ops").glob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            m = pattern.search(line)
            if m and m.group(1) in declared:
                offenders.append(f"{path.name}:{i}: {line.strip()}")
    assert offenders == []


def test_a_competing_default_would_be_found(tmp_path):
    """The scan above is not vacuous: a dataclass re-declaring a config default is reported."""
    declared = _declared_fields()

    @dataclasses.dataclass
    class Sneaky:
        eps_low: float = 0.3

    f = dataclasses.fields(Sneaky)[0]
    assert f.name in declared and f.default != generated.UpdateLoss().eps_low


def test_requests_are_refused_naming_the_field():
    ok = with_defaults("train.update", {"handles": {"und": "h"}, "loss": {}, "est_seed": 1})
    validate_args("train.update", ok)
    assert ok["loss"] == {"eps_low": 0.2, "eps_high": 0.2, "beta": 0, "agg": "seq_mean", "norm": "side"}
    cases = [
        ({**ok, "extra": 1}, "unknown field(s) extra", "extra"),
        ({k: v for k, v in ok.items() if k != "est_seed"}, "missing field(s) est_seed", "est_seed"),
        ({**ok, "loss": {**ok["loss"], "eps_low": "x"}}, "eps_low must be number", "loss.eps_low"),
        ({**ok, "loss": {**ok["loss"], "agg": "sum"}}, "agg must be one of", "loss.agg"),
    ]
    for args, msg, field in cases:
        with pytest.raises(BadRequest, match=re.escape(msg)) as ei:
            validate_args("train.update", args)
        assert ei.value.detail["field"] == field


def test_a_renamed_metric_fails_the_declared_reply():
    m = {
        "loss": 0.1,
        "grad_norm": 1.0,
        "lr": 1e-3,
        "update_tokens": 4.0,
        "update_s": 0.1,
        "optimizer_step": 1,
        "elapsed_s": 0.1,
        "und/clip_frac": 0.0,
    }
    validate_reply("train.update", m)
    m["und/clipfrac"] = m.pop("und/clip_frac")
    with pytest.raises(BadRequest, match="und/clipfrac"):
        validate_reply("train.update", m)


def test_error_codes_and_dtypes_come_from_the_shared_constants():
    from pairuni_sidecar import errors
    from pairuni_sidecar.protocol import constants

    assert errors.ERROR_CODES is generated.ERROR_CODES
    assert constants.DTYPES is generated.DTYPES
    for e in (errors.BadRequest("x"), errors.NotFound("y")):
        assert e.to_wire()["code"] in generated.ERROR_CODES and e.to_wire()["detail"]["type"] == type(e).__name__
