"""The sidecar rank: one I/O thread (the main thread) owns both ZeroMQ sockets; handlers run on one
worker thread. They talk through queues plus an inproc wake-up socket, so a long handler never
delays heartbeats, cancels or the data stream (pyzmq sockets must never be shared across threads).
"""

from __future__ import annotations

import os
import queue
from collections import deque
import socket as pysocket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import zmq

from . import __version__, log
from .errors import BadRequest, SidecarError, TooLarge, UnknownOp
from .protocol.constants import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_WINDOW_BYTES,
    FLAG_STREAMED,
    WIRE_MAJOR,
    WIRE_MINOR,
)
from .protocol.pool import BufferPool
from .protocol.header import decode_header_frame, encode_header_frame
from .protocol.payload import (
    arrow_to_table,
    check_descriptors,
    decode_payloads,
    encode_payloads,
    raw_to_tensor,
    stream_layout,
)
from .contract import validate_args, validate_payloads, with_defaults
from .registry import HandleStore, OpContext, Reply, get_op, load_plugins

COPY_THRESHOLD = 64 * 1024
TRACE = bool(os.environ.get("PAIRUNI_TRACE"))


@dataclass
class InStream:
    header: dict
    descs: list
    offsets: list
    buf: np.ndarray  # uint8, len = tot, from the receive pool
    seq: int = 0
    cur: int = 0
    next: int = 0
    last_activity: float = field(default_factory=time.monotonic)


@dataclass
class OutStream:
    sid: int
    pieces: list  # (off, memoryview)
    idx: int = 0


@dataclass
class Limits:
    chunk: int = DEFAULT_CHUNK_BYTES
    max_msg: int = DEFAULT_MAX_MESSAGE_BYTES
    window: int = DEFAULT_WINDOW_BYTES
    max_hdr: int = DEFAULT_MAX_HEADER_BYTES
    stall_ms: int = 30_000


class Server:
    def __init__(
        self,
        ctrl_endpoint: str,
        data_endpoint: str,
        *,
        rank: int = 0,
        world: int = 1,
        local_rank: int = 0,
        parent_pid: int | None = None,
        wait_controller_s: float = 60.0,
        plugins: tuple[str, ...] = (),
        curve: tuple[bytes, bytes, bytes] | None = None,
    ) -> None:
        self.curve = curve  # (public, secret, server public), Z85
        self.ctrl_endpoint = ctrl_endpoint
        self.data_endpoint = data_endpoint
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.parent_pid = parent_pid
        self.wait_controller_s = wait_controller_s
        self.incarnation = uuid.uuid4().hex
        self.limits = Limits()
        self.hb_ms = 500
        self.dead_ms = 4000
        self.welcomed = False
        self.stopping = False
        self.exit_code = 0
        self.credit = 0
        self.next_sid = 1
        self.in_streams: dict[int, InStream] = {}
        self.early_data: list = []
        self.backlog: dict = {}
        self.out_streams: list[OutStream] = []
        self.active: dict[int, OpContext] = {}
        self.state: dict = {"server": self}
        self.handles = HandleStore()
        self.pool = BufferPool()
        self.work_q: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self.stats = {"bad_frames": 0, "requests": 0, "late_cancels": 0}
        load_plugins(plugins)

    # ------------------------------------------------------------------ lifecycle

    def serve(self) -> int:
        self.zctx = zmq.Context()
        ident = f"{self.rank}:{self.incarnation}".encode()
        self.ctrl = self._dealer(self.ctrl_endpoint, ident, hwm=10000)
        self.data = self._dealer(self.data_endpoint, ident, hwm=64)
        self.wake_addr = f"inproc://wake-{self.incarnation}"
        self.wake = self.zctx.socket(zmq.PULL)
        self.wake.linger = 0
        self.wake.bind(self.wake_addr)
        worker = threading.Thread(target=self._worker, name="pairuni-worker", daemon=True)
        worker.start()
        log.debug(
            f"rank {self.rank}/{self.world} starting (torch {torch.__version__}, sidecar {__version__}); "
            f"connecting to {self.ctrl_endpoint}"
        )
        # Announce the data connection too: the controller waits for both before sending streams.
        self._send(self.data, "hb", {"state": "starting"})
        self._send_ctrl(
            "hello",
            {
                "wire": [WIRE_MAJOR, WIRE_MAJOR],
                "minor": WIRE_MINOR,
                "caps": ["raw", "arrow", "chunk"],
                "rank": self.rank,
                "world": self.world,
                "local_rank": self.local_rank,
                "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0),
                "host": pysocket.gethostname(),
                "pid": os.getpid(),
                "inc": self.incarnation,
                "torch": torch.__version__,
                "cuda": torch.cuda.is_available(),
                "sidecar": __version__,
            },
        )
        try:
            self._loop()
        finally:
            self.work_q.put(None)
            for c in list(self.active.values()):
                c.cancel()
            # destroy() also closes the worker's wake-up socket; linger 0 so exit never blocks.
            self.zctx.destroy(linger=0)
        return self.exit_code

    def _dealer(self, endpoint: str, ident: bytes, hwm: int) -> zmq.Socket:
        s = self.zctx.socket(zmq.DEALER)
        s.linger = 0
        s.routing_id = ident
        s.sndhwm = hwm
        s.rcvhwm = hwm
        # No libzmq size limit here: libzmq would drop the connection without a word (and the DEALER
        # did not reconnect in our tests); oversize messages from the controller are answered with a
        # typed `too_large` instead (see _drain).
        s.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
        if self.curve is not None:
            s.curve_publickey, s.curve_secretkey, s.curve_serverkey = self.curve
        s.connect(endpoint)
        return s

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.ctrl, zmq.POLLIN)
        poller.register(self.data, zmq.POLLIN)
        poller.register(self.wake, zmq.POLLIN)
        started = time.monotonic()
        self.last_seen = started
        last_hb = 0.0
        while not self.stopping:
            timeout = self.hb_ms if self.welcomed else 100
            if any(self.backlog.values()):
                timeout = 1  # a pipe was full: come back soon to push the backlog
            events = dict(poller.poll(timeout))
            if self.ctrl in events:
                self._drain(self.ctrl, is_data=False)
            if self.data in events:
                self._drain(self.data, is_data=True)
            if self.wake in events:
                while True:
                    try:
                        self.wake.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
            self._flush_backlog()
            self._flush_outbox()
            self._pump_streams()
            now = time.monotonic()
            if self.parent_pid is not None and not controller_alive(self.parent_pid):
                log.info("parent process is gone; exiting")
                self.exit_code = 5
                return
            if not self.welcomed:
                if now - started > self.wait_controller_s:
                    log.error(
                        f"no welcome from a controller at {self.ctrl_endpoint} within {self.wait_controller_s:.0f}s; exiting"
                    )
                    self.exit_code = 3
                    return
                continue
            # A local controller (--parent-pid) is alive (checked above): its silence is a busy event
            # loop, not a loss, and it ends this rank itself (bye, SIGTERM, SIGKILL at its exit).
            if self.parent_pid is None and now - self.last_seen > self.dead_ms / 1000:
                log.warn(f"controller silent for {now - self.last_seen:.1f}s (heartbeat lost); exiting")
                self.exit_code = 4
                return
            if (now - last_hb) * 1000 >= self.hb_ms:
                last_hb = now
                self._send_ctrl("hb", {"state": "busy" if self.active else "idle", "busy": len(self.active)})
            for sid, s in list(self.in_streams.items()):
                if now - s.last_activity > self.limits.stall_ms / 1000:
                    del self.in_streams[sid]
                    self._error(s.header.get("id"), BadRequest(f"chunk stream {sid} stalled"))

    def _drain(self, sock: zmq.Socket, is_data: bool) -> None:
        for _ in range(256):  # bounded, so one busy socket cannot starve the other
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.last_seen = time.monotonic()
            try:
                size = sum(len(f) for f in frames)
                if size > self.limits.chunk + self.limits.max_hdr + 64 * 1024:
                    raise _with_id(
                        TooLarge(
                            f"message of {size} bytes over the {self.limits.chunk}-byte chunk limit (large payloads must be chunk streams)"
                        ),
                        salvage_header(frames[0].buffer),
                    )
                self._on_message(frames, is_data)
            except SidecarError as e:
                self.stats["bad_frames"] += 1
                self._error(getattr(e, "request_id", None), e)
            except Exception as e:  # noqa: BLE001 - a bad frame must never kill the rank
                self.stats["bad_frames"] += 1
                log.error(f"internal error while handling a frame: {traceback.format_exc()}")
                self._error(None, SidecarError(f"internal error: {type(e).__name__}: {e}"))

    # ------------------------------------------------------------------ incoming

    def _on_message(self, frames: list, is_data: bool) -> None:
        if not frames:
            raise BadRequest("empty message")
        kind, flags, _minor, h = decode_header_frame(frames[0].buffer, self.limits.max_hdr)
        payload = frames[1:]
        if kind == "welcome":
            if self.welcomed:
                raise BadRequest("duplicate welcome")
            lim = h["limits"]
            self.limits = Limits(
                chunk=lim["chunk"],
                max_msg=lim["max_msg"],
                window=lim["window"],
                max_hdr=lim["max_hdr"],
                stall_ms=lim.get("stall_ms", 30_000),
            )
            self.hb_ms, self.dead_ms = h["hb_ms"], h["dead_ms"]
            self.credit = self.limits.window
            self.welcomed = True
            early, self.early_data = self.early_data, []
            for fr in early:
                try:
                    self._on_message(fr, True)
                except SidecarError as e:
                    self._error(getattr(e, "request_id", None), e)
            return
        if not self.welcomed:
            if kind == "err":
                log.error(f"controller refused this rank: [{h['err']['code']}] {h['err']['msg']}")
                self.stopping, self.exit_code = True, 2
                return
            if is_data and len(self.early_data) < 1024:
                # The two sockets are not ordered: a stream may overtake the welcome. Keep it for later.
                self.early_data.append(frames)
                return
            raise BadRequest(f"{kind} before welcome")
        if kind == "hb":
            return
        if kind == "bye":
            log.debug(f"controller said bye ({h.get('reason', '')}); exiting")
            self.stopping = True
            return
        if kind == "err":
            log.warn(f"controller reported: [{h['err']['code']}] {h['err']['msg']}")
            return
        if kind == "cancel":
            ctx = self.active.get(h["re"])
            if ctx is None:
                self.stats["late_cancels"] += 1
            else:
                ctx.cancel()
            return
        if is_data:
            return self._on_data(kind, flags, h, payload)
        if kind == "req":
            if flags & FLAG_STREAMED:
                raise _with_id(BadRequest("streamed requests travel on the data socket"), h)
            descs = h.get("b", [])
            try:
                check_descriptors(descs, self.limits.max_msg)
                tensors = decode_payloads(descs, [f.buffer for f in payload])
            except SidecarError as e:
                raise _with_id(e, h)
            return self._dispatch(h, tensors)
        raise BadRequest(f"unexpected {kind} on the ctrl socket")

    def _on_data(self, kind: str, flags: int, h: dict, payload: list) -> None:
        if kind == "credit":
            self.credit += h["n"]
            return
        if kind == "req":
            if not flags & FLAG_STREAMED or "st" not in h:
                raise _with_id(BadRequest("requests on the data socket must be streamed (flag + st)"), h)
            if payload:
                raise _with_id(BadRequest("streamed header must not carry payload frames"), h)
            sid, tot = h["st"]["sid"], h["st"]["tot"]
            if sid in self.in_streams:
                raise _with_id(BadRequest(f"stream id {sid} reused while open"), h)
            descs = h.get("b", [])
            try:
                check_descriptors(descs, self.limits.max_msg)
            except SidecarError as e:
                raise _with_id(e, h)
            offsets, total = stream_layout(descs)
            if total != tot:
                raise _with_id(BadRequest(f"stream tot {tot} does not match its descriptors ({total})"), h)
            if tot > self.limits.max_msg:
                raise _with_id(TooLarge(f"stream of {tot} bytes over the limit"), h)
            if TRACE:
                log.debug(f"trace: stream {sid} header, {tot} bytes")
            s = InStream(header=h, descs=descs, offsets=offsets, buf=self.pool.get(tot))
            self._skip_empty(s)
            self.in_streams[sid] = s
            if s.cur >= len(descs):
                self._finish_stream(sid, s)
            return
        if kind == "chunk":
            sid = h["sid"]
            s = self.in_streams.get(sid)
            if s is None:
                raise BadRequest(f"chunk for unknown stream {sid}")

            def fail(msg: str) -> SidecarError:
                del self.in_streams[sid]
                return _with_id(BadRequest(f"broken chunk stream {sid}: {msg}"), s.header)

            if len(payload) != 1:
                raise fail(f"chunk carries {len(payload)} frames, expected 1")
            data = payload[0].buffer
            n = memoryview(data).nbytes
            if h["seq"] != s.seq:
                raise fail(f"chunk seq {h['seq']}, expected {s.seq}")
            if h["off"] != s.next:
                raise fail(f"chunk offset {h['off']}, expected {s.next}")
            end = s.offsets[s.cur] + s.descs[s.cur]["n"]
            if n == 0 or s.next + n > end or n > self.limits.chunk:
                raise fail(f"chunk of {n} bytes overruns buffer {s.cur}")
            s.buf[s.next : s.next + n] = np.frombuffer(data, dtype=np.uint8)
            s.seq += 1
            s.next += n
            s.last_activity = time.monotonic()
            if s.next == end:
                s.cur += 1
                self._skip_empty(s)
            self._send(self.data, "credit", {"n": n})
            done = s.cur >= len(s.descs)
            if bool(h.get("last", False)) != done:
                raise fail(
                    "stream complete but chunk not marked last" if done else "last chunk before the stream is complete"
                )
            if done:
                self._finish_stream(sid, s)
            return
        raise BadRequest(f"unexpected {kind} on the data socket")

    @staticmethod
    def _skip_empty(s: InStream) -> None:
        while s.cur < len(s.descs) and s.descs[s.cur]["n"] == 0:
            s.cur += 1
        if s.cur < len(s.descs):
            s.next = s.offsets[s.cur]

    def _finish_stream(self, sid: int, s: InStream) -> None:
        del self.in_streams[sid]
        if TRACE:
            log.debug(f"trace: stream {sid} complete")
        tensors = {}
        try:
            for d, off in zip(s.descs, s.offsets):
                view = s.buf[off : off + d["n"]]
                if d["enc"] == "raw":
                    tensors[d["nm"]] = raw_to_tensor(d, view)
                else:
                    tensors[d["nm"]] = arrow_to_table(d, view)
        except SidecarError as e:
            raise _with_id(e, s.header)
        self._dispatch(s.header, tensors)

    def _dispatch(self, h: dict, tensors: dict) -> None:
        rid = h["id"]
        spec = get_op(h["op"])
        if spec is None:
            raise _with_id(UnknownOp(f"unknown op {h['op']!r}"), h)
        if rid in self.active:
            raise _with_id(BadRequest(f"request id {rid} is already in flight"), h)
        # The op's declared contract (src/contract/ops.ts), checked before the handler ever runs. The
        # TS client sends every field; a raw caller's omitted fields take the declared defaults (the
        # same declaration, generated), never a default of the sidecar's own.
        try:
            args = with_defaults(h["op"], h.get("a", {}))
            validate_args(h["op"], args)
            validate_payloads(h["op"], tensors)
        except SidecarError as e:
            raise _with_id(e, h)
        deadline = time.monotonic() + h["dl"] / 1000 if "dl" in h else None

        def progress(p: dict, rid: int = rid) -> None:
            self.outbox.put(("prog", {"re": rid, **p}, []))
            self._wake_io()

        ctx = OpContext(h["op"], rid, deadline, self.state, self.handles, progress)
        self.active[rid] = ctx
        self.stats["requests"] += 1
        self.work_q.put((ctx, spec, args, tensors))

    # ------------------------------------------------------------------ worker

    def _wake_io(self) -> None:
        sock = getattr(self._tls, "wake", None)
        if sock is None:
            sock = self.zctx.socket(zmq.PUSH)
            sock.linger = 0
            sock.connect(self.wake_addr)
            self._tls.wake = sock
        try:
            sock.send(b"", zmq.NOBLOCK)
        except zmq.Again:
            pass  # the doorbell's queue is full: the I/O thread has wake-ups pending and will drain the outbox

    _tls = threading.local()

    def _worker(self) -> None:
        # The world (device, and with more than one rank the process group and mesh) is set up here,
        # after hello: the controller sees which ranks arrived while the group waits for the others.
        try:
            from . import dist

            dist.init_world(self.rank, self.world, self.local_rank)
        except Exception:  # noqa: BLE001 - a rank that cannot join the world leaves it
            log.error(
                f"cannot join the torch.distributed world as rank {self.rank}/{self.world}: {traceback.format_exc()}"
            )
            self.exit_code, self.stopping = 6, True
            self._wake_io()
            return
        while True:
            item = self.work_q.get()
            if item is None:
                return
            try:
                self._run(*item)
            except Exception:  # noqa: BLE001 - the worker thread must outlive any one request
                log.error(f"worker error outside a handler: {traceback.format_exc()}")
            # Drop our references now: the request's tensors (possibly a 1 GiB arena) must not
            # outlive the request while the worker waits for the next one.
            del item

    def _run(self, ctx: OpContext, spec, args: dict, tensors: dict) -> None:
        try:
            ctx.check()
            t0 = time.perf_counter()
            result = spec.fn(ctx, args, tensors)
            if TRACE:
                log.debug(f"trace: op {ctx.op} ran {1000 * (time.perf_counter() - t0):.1f} ms")
            if result is None:
                result = Reply()
            elif isinstance(result, dict):
                result = Reply(args=result)
            descs, bufs = encode_payloads(result.tensors)
            self.outbox.put(("res", {"re": ctx.request_id, "a": result.args, "b": descs}, bufs))
        except SidecarError as e:
            self.outbox.put(("err", {"re": ctx.request_id, "err": e.to_wire()}, []))
        except Exception as e:  # noqa: BLE001 - handler bugs become typed replies, not dead ranks
            tb = traceback.format_exc()
            log.debug(f"op {ctx.op} failed:\n{tb}")
            self.outbox.put(
                (
                    "err",
                    {
                        "re": ctx.request_id,
                        "err": {
                            "code": "op_failed",
                            "msg": f"{type(e).__name__}: {e}",
                            "retryable": False,
                            "detail": {"type": type(e).__name__, "traceback": tb[-4000:]},
                        },
                    },
                    [],
                )
            )
        finally:
            self.outbox.put(("done", ctx.request_id, None))
            self._wake_io()

    # ------------------------------------------------------------------ outgoing

    def _flush_outbox(self) -> None:
        while True:
            try:
                kind, h, bufs = self.outbox.get_nowait()
            except queue.Empty:
                return
            if kind == "done":
                self.active.pop(h, None)
                continue
            try:
                if kind == "res":
                    if not h["b"]:
                        del h["b"]
                    total = sum(memoryview(b).nbytes for b in bufs)
                    if total > self.limits.chunk:
                        self._start_stream(h, bufs)
                    else:
                        self._send(self.ctrl, "res", h, bufs)
                else:
                    self._send(self.ctrl, kind, h)
            except SidecarError as e:
                self._error(h.get("re"), e)

    def _start_stream(self, h: dict, bufs: list) -> None:
        sid = self.next_sid
        self.next_sid += 1
        offsets, total = stream_layout(h["b"])
        self._send(self.data, "res", {**h, "st": {"sid": sid, "tot": total}}, flags=FLAG_STREAMED)
        pieces = []
        for off, b in zip(offsets, bufs):
            mv = memoryview(b).cast("B")
            for o in range(0, mv.nbytes, self.limits.chunk):
                pieces.append((off + o, mv[o : o + self.limits.chunk]))
        self.out_streams.append(OutStream(sid, pieces))

    def _pump_streams(self) -> None:
        while self.out_streams:
            s = self.out_streams[0]
            while s.idx < len(s.pieces):
                off, mv = s.pieces[s.idx]
                if self.credit < mv.nbytes:
                    return
                self.credit -= mv.nbytes
                h = {"sid": s.sid, "seq": s.idx, "off": off}
                if s.idx == len(s.pieces) - 1:
                    h["last"] = True
                self._send(self.data, "chunk", h, [mv])
                s.idx += 1
            self.out_streams.pop(0)

    def _send(self, sock: zmq.Socket, kind: str, h: dict, bufs: list | None = None, flags: int = 0) -> None:
        frames = [encode_header_frame(kind, h, flags)] + list(bufs or [])
        q = self.backlog.setdefault(sock, deque())
        if q:
            q.append(frames)  # keep order behind what is already waiting
            return
        try:
            sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            # Never block the I/O thread on a full pipe: it must keep reading (or both sides could
            # wait on each other). The backlog drains as the controller reads.
            q.append(frames)
        except zmq.ZMQError as e:
            log.warn(f"send of {kind} failed: {e}")

    def _flush_backlog(self) -> None:
        for sock, q in self.backlog.items():
            while q:
                try:
                    sock.send_multipart(q[0], zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                except zmq.ZMQError as e:
                    log.warn(f"send failed: {e}")
                q.popleft()

    def _send_ctrl(self, kind: str, h: dict) -> None:
        self._send(self.ctrl, kind, h)

    def _error(self, rid: int | None, e: SidecarError) -> None:
        h: dict[str, Any] = {"err": e.to_wire()}
        if rid is not None:
            h["re"] = rid
        self._send(self.ctrl, "err", h)


def read_curve(key_file: str | None, server: str | None) -> tuple[bytes, bytes, bytes] | None:
    """(public, secret, server public) from a ``pairuni keys`` .key file and the controller's key or .pub."""
    if not key_file and not server:
        return None
    if not (key_file and server):
        raise SystemExit(
            "CURVE needs both --curve-key (this rank's .key) and --curve-server (the controller's public key)"
        )
    import json

    try:
        with open(key_file) as f:
            kp = json.load(f)
        pub, sec = kp["public"], kp["secret"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"cannot read the CURVE key file {key_file!r}: {e}") from None
    srv = server.strip()
    if len(srv) != 40 and os.path.isfile(srv):
        with open(srv) as f:
            srv = f.read().strip()
    for what, k in (("public", pub), ("secret", sec), ("server", srv)):
        if not isinstance(k, str) or len(k) != 40:
            raise SystemExit(f"CURVE {what} key is not 40 Z85 characters")
    return pub.encode(), sec.encode(), srv.encode()


def controller_alive(pid: int) -> bool:
    """Whether the controller process still exists (it is our parent, or torchrun's parent)."""
    if os.getppid() == pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def salvage_header(frame) -> dict:
    """Best-effort header read (no validation) so an error can still name the request it answers."""
    try:
        import msgpack

        v = msgpack.unpackb(bytes(frame[8:]), raw=False, strict_map_key=False)
        return v if isinstance(v, dict) else {}
    except Exception:  # noqa: BLE001
        return {}


def _with_id(e: SidecarError, h: dict) -> SidecarError:
    rid = h.get("id") if isinstance(h, dict) else None
    if isinstance(rid, int) and not isinstance(rid, bool):
        e.request_id = rid  # type: ignore[attr-defined]
    return e
