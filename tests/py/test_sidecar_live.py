"""The sidecar process driven by a controller written in Python (pyzmq), independent of the TS one:
handshake, ops, every fuzz-corpus input, chunk streams both ways, and shutdown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from pairuni_sidecar.protocol.constants import FLAG_STREAMED
from pairuni_sidecar.protocol.header import decode_header_frame, encode_header_frame
from pairuni_sidecar.protocol.payload import stream_layout

ROOT = Path(__file__).resolve().parents[2]
FUZZ = json.loads((ROOT / "protocols" / "vectors" / "fuzz.json").read_text())
CHUNK = 1 << 20


class FakeController:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="pu-")
        self.ctx = zmq.Context()
        self.ctrl = self.ctx.socket(zmq.ROUTER)
        self.data = self.ctx.socket(zmq.ROUTER)
        for s in (self.ctrl, self.data):
            s.linger = 0
        self.ctrl.bind(f"ipc://{self.dir}/ctrl")
        self.data.bind(f"ipc://{self.dir}/data")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "python_sidecar")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pairuni_sidecar", "--connect", f"ipc://{self.dir}/ctrl", "--threads", "1"], env=env
        )
        rid, f0 = self.ctrl.recv_multipart()
        kind, _, _, h = decode_header_frame(f0, 1 << 20)
        assert kind == "hello" and h["world"] == 1
        self.rid = rid
        self.credit = 8 * CHUNK
        # dead_ms and stall_ms well above what a busy machine can put between two of this test's sends.
        self.send(
            "welcome",
            {
                "major": 1,
                "minor": 0,
                "run": "t",
                "hb_ms": 200,
                "dead_ms": 6000,
                "limits": {
                    "chunk": CHUNK,
                    "max_msg": 1 << 34,
                    "window": 8 * CHUNK,
                    "max_hdr": 1 << 20,
                    "stall_ms": 5000,
                },
            },
        )

    def send(self, kind, h, *bufs, flags=0, sock=None):
        (sock or self.ctrl).send_multipart([self.rid, encode_header_frame(kind, h, flags), *bufs])

    def raw(self, frames, socket="ctrl"):
        (self.data if socket == "data" else self.ctrl).send_multipart([self.rid, *frames])

    def recv(self, want_re=None, timeout=120.0):
        """Next res/err (skipping heartbeats, progress); streamed replies are reassembled. The timeout
        only turns a missing answer into a failure; no test waits for it to pass."""
        poller = zmq.Poller()
        poller.register(self.ctrl, zmq.POLLIN)
        poller.register(self.data, zmq.POLLIN)
        streams = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.send("hb", {"state": "ok"})  # a live controller heartbeats; a silent one gets abandoned
            for sock, _ in poller.poll(100):
                _, f0, *rest = sock.recv_multipart()
                kind, flags, _, h = decode_header_frame(f0, 1 << 20)
                if kind in ("hb", "prog"):
                    continue
                if kind == "credit":
                    self.credit += h["n"]
                    continue
                if kind == "res" and flags & FLAG_STREAMED:
                    offs, tot = stream_layout(h["b"])
                    streams[h["st"]["sid"]] = (h, offs, bytearray(tot))
                    continue
                if kind == "chunk":
                    hh, offs, buf = streams[h["sid"]]
                    buf[h["off"] : h["off"] + len(rest[0])] = rest[0]
                    self.send("credit", {"n": len(rest[0])}, sock=self.data)
                    if h.get("last"):
                        return "res", hh, [bytes(buf[o : o + d["n"]]) for o, d in zip(offs, hh["b"])]
                    continue
                if want_re is None or h.get("re") in (None, want_re):
                    return kind, h, rest
        raise TimeoutError("no answer from the sidecar")

    def call(self, op, a=None, tensors=None, id=1000):
        descs, bufs = [], []
        for nm, arr in (tensors or {}).items():
            dt = {np.dtype("float32"): "f32", np.dtype("int32"): "i32", np.dtype("uint8"): "u8"}[arr.dtype]
            descs.append({"nm": nm, "enc": "raw", "n": arr.nbytes, "dt": dt, "sh": list(arr.shape)})
            bufs.append(arr.tobytes())
        h = {"id": id, "op": op, "a": a or {}}
        if descs:
            h["b"] = descs
        total = sum(len(b) for b in bufs)
        if total <= CHUNK:
            self.send("req", h, *bufs)
        else:
            offs, tot = stream_layout(descs)
            self.send("req", {**h, "st": {"sid": id, "tot": tot}}, flags=FLAG_STREAMED, sock=self.data)
            pieces = [(o + i, b[i : i + CHUNK]) for o, b in zip(offs, bufs) for i in range(0, len(b), CHUNK)]
            for seq, (off, piece) in enumerate(pieces):
                while self.credit < len(piece):
                    kind, h2, _ = self._pump_credit()
                self.credit -= len(piece)
                ch = {"sid": id, "seq": seq, "off": off}
                if seq == len(pieces) - 1:
                    ch["last"] = True
                self.send("chunk", ch, piece, sock=self.data)
        return self.recv(want_re=id)

    def _pump_credit(self):
        _, f0, *rest = self.data.recv_multipart()
        kind, _, _, h = decode_header_frame(f0, 1 << 20)
        if kind == "credit":
            self.credit += h["n"]
        return kind, h, rest

    def close(self):
        self.send("bye", {"reason": "test over"})
        try:
            self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.ctx.destroy(linger=0)
            shutil.rmtree(self.dir, ignore_errors=True)


def test_sidecar_exits_when_the_controller_goes_silent():
    c = FakeController()
    try:
        # Stop talking: no heartbeats; dead_ms is 6000. Exit code 4 is the heartbeat-loss exit (server.py).
        c.proc.wait(120)
        assert c.proc.returncode == 4
    finally:
        if c.proc.poll() is None:
            c.proc.kill()
        c.ctx.destroy(linger=0)
        shutil.rmtree(c.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def fc():
    c = FakeController()
    yield c
    c.close()
    assert c.proc.returncode == 0


def test_info_and_echo(fc):
    kind, h, _ = fc.call("info")
    assert kind == "res" and "echo" in h["a"]["ops"]
    kind, h, bufs = fc.call("tensor.echo", tensors={"x": np.arange(6, dtype=np.int32).reshape(2, 3)})
    assert kind == "res" and np.frombuffer(bufs[0], dtype=np.int32).tolist() == list(range(6))


@pytest.mark.parametrize("case", FUZZ, ids=[c["name"] for c in FUZZ])
def test_fuzz_corpus_live(fc, case):
    fc.raw([bytes.fromhex(f) for f in case["frames"]], case["socket"])
    kind, h, _ = fc.recv(want_re=1)
    if case["expect"] == "accept":
        assert kind == "res", h
    else:
        assert kind == "err" and h["err"]["code"] == case["expect"], h
    kind, h, _ = fc.call("echo", {"still": "serving"}, id=2)
    assert kind == "res" and h["a"] == {"still": "serving"}


def test_streams_both_ways_with_credit(fc):
    x = (np.arange(3 * CHUNK + 123, dtype=np.uint8) * 7).astype(np.uint8)
    y = np.arange(CHUNK // 2, dtype=np.float32)
    kind, h, bufs = fc.call("tensor.echo", tensors={"x": x, "y": y}, id=77)
    assert kind == "res"
    names = [d["nm"] for d in h["b"]]
    assert np.array_equal(np.frombuffer(bufs[names.index("x")], dtype=np.uint8), x)
    assert np.array_equal(np.frombuffer(bufs[names.index("y")], dtype=np.float32), y)


def test_a_stalled_stream_is_dropped_with_an_error(fc):
    fc.send(
        "req",
        {
            "id": 88,
            "op": "tensor.echo",
            "a": {},
            "b": [{"nm": "x", "enc": "raw", "n": 8, "dt": "u8", "sh": [8]}],
            "st": {"sid": 88, "tot": 8},
        },
        flags=FLAG_STREAMED,
        sock=fc.data,
    )
    kind, h, _ = fc.recv(want_re=88)
    assert kind == "err" and "stalled" in h["err"]["msg"]
