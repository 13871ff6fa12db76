"""Regenerates protocols/vectors/*.json and the pyarrow-made Arrow streams.

    .venv/bin/python protocols/tools/make_vectors.py

Header vectors are encoded with the Python encoder; the TS suite checks that its own encoder
produces the same bytes (and both decode them to the same value). The fuzz corpus lists malformed
inputs with the error code every implementation must answer.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import msgpack
import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python_sidecar"))
from pairuni_sidecar.protocol.constants import KINDS, MAGIC  # noqa: E402
from pairuni_sidecar.protocol.header import encode_header_frame  # noqa: E402

OUT = ROOT / "protocols" / "vectors"


def pre(kind: str = "req", major: int = 1, minor: int = 0, flags: int = 0, kind_code: int | None = None) -> bytes:
    return MAGIC + bytes((major, minor, KINDS[kind] if kind_code is None else kind_code, flags))


def raw_msgpack(v) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


# ----------------------------------------------------------------------------- header vectors

HEADERS = [
    (
        "hello",
        {
            "wire": [1, 1],
            "minor": 0,
            "caps": ["raw", "arrow", "chunk"],
            "rank": 0,
            "world": 1,
            "local_rank": 0,
            "host": "node-1",
            "pid": 4242,
            "inc": "0123456789abcdef",
            "torch": "2.13.0",
            "cuda": False,
        },
    ),
    (
        "welcome",
        {
            "major": 1,
            "minor": 0,
            "run": "run-1",
            "hb_ms": 500,
            "dead_ms": 4000,
            "limits": {"chunk": 4194304, "max_msg": 17179869184, "window": 33554432, "max_hdr": 1048576},
        },
    ),
    ("req", {"id": 1, "op": "echo", "a": {}}),
    (
        "req",
        {
            "id": 7,
            "op": "rollout.generate",
            "dl": 30000,
            "a": {
                "k": 8,
                "cfg": 5.0,
                "temperature": 1,
                "prompts": ["a red cube", "zwei Würfel ✓"],
                "nested": {"x": [1, -2, 3.25, None, True]},
            },
            "b": [
                {"nm": "ids", "enc": "raw", "n": 24, "dt": "i32", "sh": [2, 3]},
                {"nm": "batch", "enc": "arrow", "n": 616},
            ],
        },
    ),
    (
        "req",
        {
            "id": 9007199254740991,
            "op": "big.ids",
            "a": {"neg": -9007199254740991, "small_neg": -33, "f": 0.1, "e": 1e300, "tiny": 5e-324},
        },
    ),
    (
        "req",
        {
            "id": 3,
            "op": "stream",
            "a": {},
            "b": [{"nm": "x", "enc": "raw", "n": 67108864, "dt": "f32", "sh": [4096, 4096]}],
            "st": {"sid": 1, "tot": 67108864},
        },
    ),
    (
        "res",
        {
            "re": 7,
            "a": {"reward": [0.25, 0.5], "ok": True},
            "b": [{"nm": "img", "enc": "raw", "n": 12, "dt": "u8", "sh": [1, 2, 2, 3]}],
        },
    ),
    (
        "err",
        {
            "re": 7,
            "err": {
                "code": "op_failed",
                "msg": "ValueError: boom",
                "retryable": False,
                "detail": {"type": "ValueError"},
            },
        },
    ),
    ("err", {"err": {"code": "bad_request", "msg": "bad magic: not a pairuni frame", "retryable": False}}),
    ("cancel", {"re": 7}),
    ("hb", {"state": "busy", "busy": 1}),
    ("credit", {"n": 4194304}),
    ("chunk", {"sid": 1, "seq": 0, "off": 0}),
    ("chunk", {"sid": 1, "seq": 15, "off": 62914560, "last": True}),
    ("bye", {"reason": "controller closing"}),
    ("prog", {"re": 7, "done": 3, "total": 10, "msg": "rollouts"}),
]


def header_vectors() -> list[dict]:
    out = []
    for i, (kind, h) in enumerate(HEADERS):
        flags = 1 if "st" in h else 0
        out.append(
            {
                "name": f"{i:03d}-{kind}",
                "kind": kind,
                "flags": flags,
                "header": h,
                "frame": encode_header_frame(kind, h, flags).hex(),
            }
        )
    return out


# ----------------------------------------------------------------------------- fuzz corpus


def arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def req(op="echo", id=1, a=None, b=None, **extra) -> dict:
    h = {"id": id, "op": op, "a": a if a is not None else {}}
    if b is not None:
        h["b"] = b
    h.update(extra)
    return h


def msg(h: dict, *payloads: bytes, kind="req", flags=0) -> list[bytes]:
    return [encode_header_frame(kind, h, flags), *payloads]


def good_table() -> pa.Table:
    return pa.table(
        {"tokens": pa.array([[1, 2], [3]], type=pa.list_(pa.int32())), "r": pa.array([0.5, 1.5], type=pa.float32())}
    )


def arrow_cases() -> list[tuple[str, bytes, str]]:
    """(name, stream bytes, expected code) for hostile or out-of-subset Arrow streams."""
    good = arrow_stream(good_table())
    cases = [("arrow-valid", good, "accept")]
    cases.append(("arrow-truncated-body", good[: len(good) - 40], "bad_request"))
    cases.append(("arrow-truncated-header", good[:6], "bad_request"))
    cases.append(("arrow-garbage", b"\x00" * 3 + b"\xff" * 61, "bad_request"))
    bad_cont = bytearray(good)
    bad_cont[0:4] = b"\x12\x34\x56\x78"
    cases.append(("arrow-wrong-continuation", bytes(bad_cont), "bad_request"))
    neg = bytearray(good)
    neg[4:8] = struct.pack("<i", -5)
    cases.append(("arrow-negative-metadata-length", bytes(neg), "bad_request"))
    huge = bytearray(good)
    huge[4:8] = struct.pack("<i", 0x7FFFFFF0)
    cases.append(("arrow-huge-metadata-length", bytes(huge), "bad_request"))
    cases.append(("arrow-empty-frame", b"", "bad_request"))
    with_nulls = pa.table({"x": pa.array([1.0, None, 3.0], type=pa.float32())})
    cases.append(("arrow-nulls", arrow_stream(with_nulls), "bad_request"))
    dict_t = pa.table({"d": pa.array(["a", "b", "a"]).dictionary_encode()})
    cases.append(("arrow-dictionary", arrow_stream(dict_t), "bad_request"))
    large = pa.table({"l": pa.array([[1, 2]], type=pa.large_list(pa.int32()))})
    cases.append(("arrow-large-list", arrow_stream(large), "bad_request"))
    ts = pa.table({"t": pa.array([1, 2], type=pa.timestamp("ms"))})
    cases.append(("arrow-timestamp-type", arrow_stream(ts), "bad_request"))
    binary = pa.table({"b": pa.array([b"x"], type=pa.binary())})
    cases.append(("arrow-binary-type", arrow_stream(binary), "bad_request"))
    # Unknown extension name and a lying fixed_shape_tensor shape, as field metadata.
    fsl = pa.list_(pa.float32(), 6)
    vals = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(12, dtype=np.float32)), 6)
    for name, meta, code in [
        (
            "arrow-unknown-extension",
            {b"ARROW:extension:name": b"acme.tensor", b"ARROW:extension:metadata": b"{}"},
            "bad_request",
        ),
        (
            "arrow-fst-shape-mismatch",
            {b"ARROW:extension:name": b"arrow.fixed_shape_tensor", b"ARROW:extension:metadata": b'{"shape":[4,4]}'},
            "bad_request",
        ),
        (
            "arrow-fst-bad-json",
            {b"ARROW:extension:name": b"arrow.fixed_shape_tensor", b"ARROW:extension:metadata": b'{"shape":[2,'},
            "bad_request",
        ),
        (
            "arrow-fst-valid",
            {b"ARROW:extension:name": b"arrow.fixed_shape_tensor", b"ARROW:extension:metadata": b'{"shape":[2,3]}'},
            "accept",
        ),
    ]:
        schema = pa.schema([pa.field("t", fsl, nullable=False, metadata=meta)])
        cases.append((name, arrow_stream(pa.Table.from_arrays([vals], schema=schema)), code))
    # Offsets that go backwards / past the values: patch the offsets buffer of a List<Int32> batch.
    t = pa.table({"l": pa.array([[1, 2], [3, 4, 5]], type=pa.list_(pa.int32()))})
    s = bytearray(arrow_stream(t))
    marker = struct.pack("<iii", 0, 2, 5)
    at = bytes(s).find(marker)
    assert at > 0, "offsets buffer not found"
    back = bytearray(s)
    back[at : at + 12] = struct.pack("<iii", 0, 4, 2)
    cases.append(("arrow-offsets-non-monotonic", bytes(back), "bad_request"))
    past = bytearray(s)
    past[at : at + 12] = struct.pack("<iii", 0, 2, 99)
    cases.append(("arrow-offsets-past-values", bytes(past), "bad_request"))
    cases.append(("arrow-schema-only", arrow_stream(pa.table({"x": pa.array([], type=pa.float32())})), "accept"))
    two_schemas = arrow_stream(good_table()) + arrow_stream(good_table())
    cases.append(("arrow-two-streams-concatenated", two_schemas, "bad_request"))
    return cases


def fuzz_corpus() -> list[dict]:
    C: list[dict] = []

    # Cases whose error comes from the receiving rank's state or op table, not from decoding the
    # message itself: a pure decoder (e.g. the TS one) accepts them.
    stateful = {
        "unknown-op",
        "res-on-rank",
        "chunk-on-ctrl",
        "chunk-unknown-stream",
        "plain-req-on-data",
        "streamed-flag-on-ctrl",
    }

    def add(name: str, frames: list[bytes], expect: str, socket: str = "ctrl") -> None:
        C.append(
            {
                "name": name,
                "socket": socket,
                "frames": [f.hex() for f in frames],
                "expect": expect,
                "decode": "accept" if name in stateful else expect,
            }
        )

    body = raw_msgpack({"a": {}, "id": 1, "op": "echo"})
    # 1. framing / preamble
    add("empty-header-frame", [b""], "bad_request")
    for n in (1, 4, 7):
        add(f"short-preamble-{n}", [pre()[:n]], "bad_request")
    add("wrong-magic", [b"TSB\x01" + pre()[4:] + body], "bad_request")
    add("magic-only", [MAGIC], "bad_request")
    for major in (0, 2, 255):
        add(f"major-{major}", [pre(major=major) + body], "unsupported_version")
    add("unknown-kind-0", [pre(kind_code=0) + body], "bad_request")
    add("unknown-kind-99", [pre(kind_code=99) + body], "bad_request")
    add("unknown-flag-bits", [pre(flags=0x80) + body], "bad_request")
    add(
        "future-minor-unknown-keys",
        [pre(minor=7) + raw_msgpack({"a": {"x": 1}, "id": 1, "op": "echo", "zz_future": [1, 2]})],
        "accept",
    )
    add("preamble-without-header", [pre()], "bad_request")
    # 2. msgpack
    add("msgpack-truncated", [pre() + body[:-3]], "bad_request")
    add("msgpack-trailing-bytes", [pre() + body + b"\xc0"], "bad_request")
    add("msgpack-root-array", [pre() + raw_msgpack([1, 2])], "bad_request")
    add("msgpack-root-nil", [pre() + b"\xc0"], "bad_request")
    add("msgpack-root-int", [pre() + b"\x05"], "bad_request")
    add("msgpack-depth-10000", [pre() + b"\x91" * 10000 + b"\x00"], "bad_request")
    add("msgpack-str32-declares-4GiB", [pre() + b"\x81\xa2op\xdb\xff\xff\xff\xff" + b"x" * 10], "bad_request")
    add("msgpack-bin32-declares-4GiB", [pre() + b"\x81\xa2op\xc6\xff\xff\xff\xff" + b"x" * 10], "bad_request")
    add(
        "msgpack-map32-declares-1e6-keys",
        [pre() + b"\xdf" + struct.pack(">I", 1_000_000) + b"\xa1a\x01"],
        "bad_request",
    )
    add("msgpack-array32-declares-huge", [pre() + b"\x81\xa1a\xdd\xff\xff\xff\xff\x01"], "bad_request")
    add("msgpack-duplicate-keys", [pre() + b"\x84\xa1a\x80\xa2id\x01\xa2id\x02\xa2op\xa4echo"], "bad_request")
    add("msgpack-unsorted-keys", [pre() + b"\x83\xa2op\xa4echo\xa2id\x01\xa1a\x80"], "bad_request")
    add("msgpack-non-minimal-int", [pre() + b"\x83\xa1a\x80\xa2id\xcd\x00\x01\xa2op\xa4echo"], "bad_request")
    add(
        "msgpack-float-encoded-int",
        [pre() + b"\x83\xa1a\x80\xa2id\xcb" + struct.pack(">d", 1.0) + b"\xa2op\xa4echo"],
        "bad_request",
    )
    add("msgpack-int-key", [pre() + b"\x81\x01\x02"], "bad_request")
    add("msgpack-bin-key", [pre() + b"\x81\xc4\x01k\x02"], "bad_request")
    add("msgpack-nil-key", [pre() + b"\x81\xc0\x02"], "bad_request")
    add("msgpack-map-key", [pre() + b"\x81\x80\x02"], "bad_request")
    add(
        "msgpack-ext-timestamp",
        [pre() + b"\x83\xa1a\x81\xa1t\xd6\xff\x00\x00\x00\x01\xa2id\x01\xa2op\xa4echo"],
        "bad_request",
    )
    add("msgpack-ext-record-0x72", [pre() + b"\x83\xa1a\x81\xa1r\xd4\x72\x00\xa2id\x01\xa2op\xa4echo"], "bad_request")
    add("msgpack-invalid-utf8", [pre() + b"\x83\xa1a\x80\xa2id\x01\xa2op\xa4ec\xff\xfe"], "bad_request")
    for nm, val in (("nan", float("nan")), ("inf", float("inf")), ("neg-inf", float("-inf")), ("neg-zero", -0.0)):
        add(
            f"msgpack-float-{nm}",
            [pre() + b"\x83\xa1a\x81\xa1x\xcb" + struct.pack(">d", val) + b"\xa2id\x01\xa2op\xa4echo"],
            "bad_request",
        )
    add(
        "msgpack-int-2^53",
        [pre() + b"\x83\xa1a\x80\xa2id\xcf" + struct.pack(">Q", 2**53) + b"\xa2op\xa4echo"],
        "bad_request",
    )
    add(
        "msgpack-int-2^63",
        [pre() + b"\x83\xa1a\x80\xa2id\xcf" + struct.pack(">Q", 2**63) + b"\xa2op\xa4echo"],
        "bad_request",
    )
    add("msgpack-uint64-max", [pre() + b"\x83\xa1a\x80\xa2id\xcf" + b"\xff" * 8 + b"\xa2op\xa4echo"], "bad_request")
    add("negative-id", [pre() + raw_msgpack({"a": {}, "id": -1, "op": "echo"})], "bad_request")
    add("bin-where-str-expected", [pre() + b"\x83\xa1a\x80\xa2id\x01\xa2op\xc4\x04echo"], "bad_request")
    add("str-where-int-expected", [pre() + raw_msgpack({"a": {}, "id": "1", "op": "echo"})], "bad_request")
    # 3. semantics
    add("unknown-op", msg(req(op="no.such.op")), "unknown_op")
    add("missing-id", [encode_header_frame("req", {"op": "echo"})], "bad_request")
    add("missing-op", [encode_header_frame("req", {"id": 1})], "bad_request")
    add("args-not-a-map", [encode_header_frame("req", {"id": 1, "op": "echo", "a": [1]})], "bad_request")
    add("extra-unknown-fields", msg(req(zz=1, yy={"q": 2})), "accept")
    add(
        "shape-as-string",
        msg(req(b=[{"nm": "x", "enc": "raw", "n": 4, "dt": "f32", "sh": "1"}]), b"\x00" * 4),
        "bad_request",
    )
    add(
        "dtype-complex32",
        msg(req(b=[{"nm": "x", "enc": "raw", "n": 4, "dt": "complex32", "sh": [1]}]), b"\x00" * 4),
        "bad_request",
    )
    add(
        "bf16-on-arrow-path",
        msg(req(b=[{"nm": "x", "enc": "arrow", "n": 4, "dt": "bf16", "sh": [2]}]), b"\x00" * 4),
        "bad_request",
    )
    add("enc-unknown", msg(req(b=[{"nm": "x", "enc": "npy", "n": 4}]), b"\x00" * 4), "bad_request")
    # 4. descriptors
    d4 = {"nm": "x", "enc": "raw", "n": 4, "dt": "f32", "sh": [1]}
    add("more-descriptors-than-frames", msg(req(b=[d4, {**d4, "nm": "y"}]), b"\x00" * 4), "bad_request")
    add("unreferenced-extra-frame", msg(req(b=[d4]), b"\x00" * 4, b"\x00" * 4), "bad_request")
    add("frames-without-descriptors", msg(req(), b"\x00" * 4), "bad_request")
    add("n-not-frame-length", msg(req(b=[{**d4, "n": 4}]), b"\x00" * 8), "bad_request")
    add("n-not-shape-times-itemsize", msg(req(b=[{**d4, "n": 8}]), b"\x00" * 8), "bad_request")
    add("shape-product-overflow", msg(req(b=[{**d4, "n": 8, "sh": [2**31, 2**31, 2**31]}]), b"\x00" * 8), "too_large")
    add("negative-dim", msg(req(b=[{**d4, "sh": [-1]}]), b"\x00" * 4), "bad_request")
    add("33-dims", msg(req(b=[{**d4, "n": 4, "sh": [1] * 33}]), b"\x00" * 4), "bad_request")
    add("0-d-tensor", msg(req(op="tensor.echo", b=[{**d4, "sh": []}]), b"\x00" * 4), "accept")
    add("zero-byte-tensor", msg(req(op="tensor.echo", b=[{**d4, "n": 0, "sh": [0, 5]}]), b""), "accept")
    add("duplicate-payload-names", msg(req(b=[d4, d4]), b"\x00" * 4, b"\x00" * 4), "bad_request")
    add(
        "bool-bytes-not-0-1",
        msg(req(op="tensor.echo", b=[{"nm": "m", "enc": "raw", "n": 3, "dt": "bool", "sh": [3]}]), b"\x00\x01\x07"),
        "bad_request",
    )
    add("raw-without-dtype", msg(req(b=[{"nm": "x", "enc": "raw", "n": 4}]), b"\x00" * 4), "bad_request")
    add("streamed-flag-on-ctrl", msg(req(st={"sid": 1, "tot": 4}, b=[d4]), flags=1), "bad_request")
    # 6. arrow payloads
    for name, blob, code in arrow_cases():
        add(name, msg(req(op="tensor.echo", b=[{"nm": "t", "enc": "arrow", "n": len(blob)}]), blob), code)
    # 7/8. kinds that must not arrive where they did
    add("res-on-rank", msg({"re": 1}, kind="res"), "bad_request")
    add("chunk-on-ctrl", msg({"sid": 1, "seq": 0, "off": 0}, b"x", kind="chunk"), "bad_request")
    add(
        "chunk-unknown-stream",
        msg({"sid": 999, "seq": 0, "off": 0, "last": True}, b"x", kind="chunk"),
        "bad_request",
        socket="data",
    )
    add("plain-req-on-data", msg(req(), kind="req"), "bad_request", socket="data")
    add(
        "credit-zero",
        [encode_header_frame("credit", {"n": 1})[:8] + raw_msgpack({"n": 0})],
        "bad_request",
        socket="data",
    )
    return C


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "headers.json").write_text(json.dumps(header_vectors(), indent=1) + "\n")
    corpus = fuzz_corpus()
    (OUT / "fuzz.json").write_text(json.dumps(corpus, indent=1) + "\n")
    # Arrow streams made by pyarrow for the TS side to read (the TS tool writes the reverse).
    want = json.loads((OUT / "arrow-expected.json").read_text())
    t = pa.table(
        {
            "tokens": pa.array(want["tokens"], type=pa.list_(pa.int32())),
            "reward": pa.array(want["reward"], type=pa.float32()),
            "text": pa.array(want["text"]),
            "img": pa.FixedShapeTensorArray.from_numpy_ndarray(
                np.array(want["img"]["values"], dtype=np.float32).reshape(want["img"]["shape"])
            ),
        }
    )
    (OUT / "arrow-from-pyarrow.arrows").write_bytes(arrow_stream(t))
    print(f"wrote {len(HEADERS)} header vectors, {len(corpus)} fuzz cases, 1 pyarrow stream to {OUT}")


if __name__ == "__main__":
    main()
