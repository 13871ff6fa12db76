"""Op registry and the per-request context handed to handlers.

A handler is a plain function ``fn(ctx, args, tensors) -> dict | Reply``:

- ``args``: the small msgpack argument map from the request (str keys).
- ``tensors``: name -> payload. Raw frames arrive as CPU ``torch.Tensor`` views (writable, aligned);
  Arrow frames as ``pyarrow.Table``.
- Return a dict (reply args only) or ``Reply(args, tensors)`` where tensors maps name -> torch.Tensor,
  numpy.ndarray or pyarrow.Table.

Handlers run on the sidecar's single worker thread, one request at a time; long handlers call
``ctx.check()`` between steps so cancellation and deadlines take effect, and ``ctx.progress()`` to
feed the controller's progress bars.
"""
from __future__ import annotations

import importlib
import itertools
import pkgutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import BadRequest, Cancelled, DeadlineExceeded, NotFound


@dataclass
class Reply:
    args: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)


Handler = Callable[["OpContext", dict, dict], "dict | Reply | None"]


@dataclass
class OpSpec:
    name: str
    fn: Handler
    doc: str = ""
    idempotent: bool = False


_REGISTRY: dict[str, OpSpec] = {}
_IMPORT_ERRORS: dict[str, str] = {}


def op(name: str, *, doc: str = "", idempotent: bool = False) -> Callable[[Handler], Handler]:
    """Register ``fn`` under the wire op name ``name`` (e.g. ``"tensor.sum"``)."""

    def deco(fn: Handler) -> Handler:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"op {name!r} registered twice ({_REGISTRY[name].fn.__module__} and {fn.__module__})")
        _REGISTRY[name] = OpSpec(name, fn, doc or (fn.__doc__ or "").strip().split("\n")[0], idempotent)
        return fn

    return deco


def get_op(name: str) -> OpSpec | None:
    return _REGISTRY.get(name)


def list_ops() -> dict[str, OpSpec]:
    return dict(_REGISTRY)


def import_errors() -> dict[str, str]:
    """Op modules that failed to import (usually a missing optional dependency), with the reason."""
    return dict(_IMPORT_ERRORS)


def load_op_modules(extra: list[str] | tuple[str, ...] = ()) -> None:
    """Import every module in ``pairuni_sidecar.ops`` plus user modules named in ``extra``.

    A module whose import fails is recorded (reported by the ``info`` op) instead of killing the
    sidecar: a missing optional dependency should disable its ops, not the whole process.
    """
    from . import ops as ops_pkg

    names = [f"{ops_pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(ops_pkg.__path__)]
    for mod in itertools.chain(names, extra):
        try:
            importlib.import_module(mod)
        except Exception as e:  # noqa: BLE001 - reported through `info`
            _IMPORT_ERRORS[mod] = f"{type(e).__name__}: {e}"


class HandleStore:
    """Objects that stay in the sidecar (models, rollout tensors) and travel by name only."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._next = itertools.count(1)
        self._lock = threading.Lock()

    def put(self, obj: Any, prefix: str = "h") -> str:
        with self._lock:
            h = f"{prefix}:{next(self._next)}"
            self._items[h] = obj
            return h

    def get(self, handle: str) -> Any:
        try:
            return self._items[handle]
        except KeyError:
            raise NotFound(f"no object under handle {handle!r} (freed, or created by an earlier sidecar process)") from None

    def free(self, handle: str) -> bool:
        with self._lock:
            return self._items.pop(handle, None) is not None

    def __len__(self) -> int:
        return len(self._items)


class OpContext:
    """What a handler may know and do about the request it serves."""

    def __init__(
        self,
        op: str,
        request_id: int,
        deadline: float | None,
        state: dict,
        handles: HandleStore,
        progress_cb: Callable[[dict], None] | None = None,
    ) -> None:
        self.op = op
        self.request_id = request_id
        self.deadline = deadline  # time.monotonic() value or None
        self.state = state  # survives across requests for the life of the process
        self.handles = handles
        self._cancel = threading.Event()
        self._progress_cb = progress_cb
        self._last_progress = 0.0

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def check(self) -> None:
        """Raise ``Cancelled``/``DeadlineExceeded`` if the request should stop now."""
        if self._cancel.is_set():
            raise Cancelled(f"{self.op} (request {self.request_id}) was cancelled by the controller")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DeadlineExceeded(f"{self.op} (request {self.request_id}) ran past its deadline")

    def progress(self, done: float, total: float | None = None, msg: str | None = None, *, force: bool = False) -> None:
        """Report progress to the controller (throttled to ~10 messages/s)."""
        now = time.monotonic()
        if self._progress_cb is None or (not force and now - self._last_progress < 0.1):
            return
        self._last_progress = now
        p: dict = {"done": done}
        if total is not None:
            p["total"] = total
        if msg is not None:
            p["msg"] = msg
        self._progress_cb(p)


def require(args: dict, key: str, typ: type | tuple[type, ...], *, op_name: str = "") -> Any:
    """Fetch ``args[key]`` and check its type, raising a ``bad_request`` that names the field."""
    if key not in args:
        raise BadRequest(f"{op_name or 'op'}: missing argument {key!r}")
    v = args[key]
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if not isinstance(v, typ) or (isinstance(v, bool) and typ in (int, float)):
        raise BadRequest(f"{op_name or 'op'}: argument {key!r} must be {getattr(typ, '__name__', typ)}, got {type(v).__name__}")
    return v
