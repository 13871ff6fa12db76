"""Protocol v1 in Python: shared vectors, the fuzz corpus at decode level, payload codecs, the pool."""

from __future__ import annotations

import gc
import json
import queue
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from pairuni_sidecar.errors import SidecarError
from pairuni_sidecar.protocol.header import decode_header_frame, encode_header_frame
from pairuni_sidecar.protocol.payload import (
    arrow_to_table,
    decode_payloads,
    encode_payloads,
    raw_to_tensor,
    stream_layout,
)
from pairuni_sidecar.protocol.pool import BufferPool
from pairuni_sidecar.server import Server

VEC = Path(__file__).resolve().parents[2] / "protocols" / "vectors"
HEADERS = json.loads((VEC / "headers.json").read_text())
FUZZ = json.loads((VEC / "fuzz.json").read_text())


@pytest.mark.parametrize("v", HEADERS, ids=[v["name"] for v in HEADERS])
def test_header_vectors_decode_and_encode_byte_equal(v):
    frame = bytes.fromhex(v["frame"])
    kind, flags, _minor, h = decode_header_frame(frame, 1 << 20)
    assert (kind, flags) == (v["kind"], v["flags"])
    assert h == v["header"]
    assert encode_header_frame(v["kind"], v["header"], v["flags"]) == frame


def test_corpus_is_large_enough():
    assert len(FUZZ) >= 60
    assert sum(1 for c in FUZZ if c["expect"] != "accept") >= 60


class _Frame:
    """Stands in for a zmq.Frame (the server reads `.buffer`)."""

    def __init__(self, b: bytes) -> None:
        self.buffer = memoryview(b)


@pytest.fixture(scope="module")
def server():
    srv = Server("inproc://unused-ctrl", "inproc://unused-data")
    srv.welcomed = True
    return srv


@pytest.mark.parametrize("case", FUZZ, ids=[c["name"] for c in FUZZ])
def test_fuzz_corpus_through_the_rank_message_handler(server, case):
    server.work_q = queue.Queue()
    server.active.clear()
    server.in_streams.clear()
    frames = [_Frame(bytes.fromhex(f)) for f in case["frames"]]
    if case["expect"] == "accept":
        server._on_message(frames, case["socket"] == "data")
        assert server.work_q.qsize() == 1, "an accepted request must reach the worker queue"
    else:
        with pytest.raises(SidecarError) as ei:
            server._on_message(frames, case["socket"] == "data")
        assert ei.value.code == case["expect"], str(ei.value)


def test_raw_tensors_at_odd_offsets_are_copied_and_correct():
    vals = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    for off in range(0, 8):
        host = bytearray(off) + vals.tobytes() + bytearray(3)
        view = memoryview(host)[off : off + 12]
        t = raw_to_tensor({"nm": "x", "enc": "raw", "n": 12, "dt": "f32", "sh": [3]}, view)
        assert t.tolist() == [1.5, -2.0, 3.25]
        assert t.data_ptr() % 4 == 0


def test_every_dtype_round_trips_through_encode_and_decode():
    samples = {
        "bool": torch.tensor([True, False, True]),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "i16": torch.tensor([-32768, 32767], dtype=torch.int16),
        "i32": torch.tensor([-(2**31), 2**31 - 1], dtype=torch.int32),
        "i64": torch.tensor([-(2**62), 2**40], dtype=torch.int64),
        "f16": torch.tensor([1.0, -2.0, 0.5], dtype=torch.float16),
        "bf16": torch.tensor([1.5, -3.0], dtype=torch.bfloat16),
        "f32": torch.tensor([[1.5, 2.5], [3.5, 4.5]]),
        "f64": torch.tensor([3.141592653589793]),
        "scalar": torch.tensor(7.0),
    }
    descs, bufs = encode_payloads(samples)
    back = decode_payloads(descs, [bytes(b) for b in bufs])
    for k, v in samples.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v), k


def test_arrow_stream_written_by_arrow_js_is_read_by_pyarrow():
    want = json.loads((VEC / "arrow-expected.json").read_text())
    blob = (VEC / "arrow-from-arrowjs.arrows").read_bytes()
    t = arrow_to_table({"nm": "t", "enc": "arrow", "n": len(blob)}, blob)
    assert t.column("tokens").to_pylist() == want["tokens"]
    assert t.column("reward").to_pylist() == want["reward"]
    assert t.column("text").to_pylist() == want["text"]
    img = t.column("img").combine_chunks()
    assert isinstance(img.type, pa.FixedShapeTensorType)
    nd = img.to_numpy_ndarray()
    assert list(nd.shape) == want["img"]["shape"]
    assert nd.ravel().tolist() == want["img"]["values"]


def test_stream_layout_aligns_every_buffer_to_64_bytes():
    offsets, total = stream_layout([{"n": 3}, {"n": 0}, {"n": 65}, {"n": 1}])
    assert offsets == [0, 64, 64, 192]
    assert total == 193


def test_pool_reuses_an_arena_only_after_every_view_is_gone():
    pool = BufferPool(max_pooled_bytes=64 << 20)
    a = pool.get(3 << 20)
    t = torch.frombuffer(memoryview(a[64:128]), dtype=torch.float32)
    del a
    gc.collect()
    assert pool.pooled_bytes() == 0  # the tensor still views the arena
    del t
    gc.collect()
    assert pool.pooled_bytes() == 3 << 20
    b = pool.get(2 << 20)  # fits the pooled 3 MiB block (within 2x)
    assert pool.hits == 1 and len(b) == 2 << 20
    c = pool.get(8 << 20)
    assert pool.misses == 2 and len(c) == 8 << 20
