"""The sidecar's one plug-in registry (ops, rewards, adapters, backbones, tiny-model builders, image codecs), its one
store of resident objects (handles), and the per-request context handed to op handlers.

A handler is a plain function ``fn(ctx, args, tensors) -> dict | Reply``:

- ``args``: the request's argument map, already checked against the op's declaration in
  src/contract/ops.ts (built-in ops) with omitted fields at their declared defaults.
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
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .contract.generated import PLUGIN_KINDS
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


# -- the one plug-in registry ----------------------------------------------------------------------
#
# Kinds: ``op`` (wire ops), ``reward`` (generation rewards: factory(config) -> scorer), ``adapter``
# (PolicyAdapter classes), ``backbone`` (image-feature loaders: fn(spec) -> Backbone), ``tiny``
# (per-family builders of tiny test models: fn(dir, seed) -> dir), ``codec`` (image codecs a tiny model's
# config.json names: factory(config) -> codec with encode/decode). An entry is an object or a lazy
# "module:attr" string imported on first use; a package declares its entries in a module-level
# ``PLUGINS = {kind: {name: "module:attr"}}`` (``op`` takes a list of modules whose ``@op`` functions
# register on import). Import failures are kept and reported by the ``info`` op and ``pairuni doctor``.

KINDS = tuple(PLUGIN_KINDS)  # declared once, in src/contract/ops.ts
#: Modules declaring the built-in ``PLUGINS``: the framework's, and the ShapesWorld toy world's (it registers
#: itself, so no framework module imports it; tests/py/test_toy_world_walled.py).
BUILTIN_PLUGIN_MODULES = ("pairuni_sidecar.plugins", "pairuni_sidecar.shapesworld.plugins")
_ENTRIES: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
_FAILED: dict[str, str] = {}


def register(kind: str, name: str, target: Any) -> None:
    """Register ``target`` (an object, or a lazy ``"module:attr"``) as plug-in ``name`` of ``kind``."""
    if kind not in _ENTRIES:
        raise ValueError(f"unknown plug-in kind {kind!r}; kinds: {KINDS}")
    cur = _ENTRIES[kind].get(name)
    if cur is not None and not isinstance(cur, str):
        if isinstance(target, str) or cur is target:
            return  # already loaded (a lazy entry declared again, or a decorator run twice)
        raise ValueError(f"{kind} {name!r} registered twice ({cur!r} and {target!r})")
    _ENTRIES[kind][name] = target


def _builtin() -> None:
    """The built-in entries, declared on first use (in-process callers never call ``load_plugins``)."""
    global _BUILTIN_DECLARED
    if not _BUILTIN_DECLARED:
        _BUILTIN_DECLARED = True
        for mod in BUILTIN_PLUGIN_MODULES:
            for kind, entries in importlib.import_module(mod).PLUGINS.items():
                if kind != "op":
                    for name, target in entries.items():
                        register(kind, name, target)


_BUILTIN_DECLARED = False
_BUILTIN_OPS_LOADED = False  # the built-in op modules imported (a test may have imported one op module alone)


def names(kind: str) -> list[str]:
    _builtin()
    return sorted(_ENTRIES[kind])


def resolve(kind: str, name: str) -> Any:
    """The plug-in object, importing a lazy entry now. Unknown names and failed imports are ``bad_request``."""
    _builtin()
    entry = _ENTRIES[kind].get(name)
    if entry is None:
        hint = f"; failed to import: {_FAILED}" if _FAILED else ""
        raise BadRequest(f"unknown {kind} {name!r}; registered: {names(kind)}{hint}", detail={"field": kind})
    if isinstance(entry, str):
        mod_name, _, attr = entry.partition(":")
        try:
            obj = getattr(importlib.import_module(mod_name), attr)
        except Exception as e:  # noqa: BLE001 - a missing optional package disables this entry only
            _FAILED[f"{kind}:{name}"] = f"{type(e).__name__}: {e}"
            raise BadRequest(
                f"{kind} {name!r} cannot be loaded ({entry}: {type(e).__name__}: {e}); "
                f"install its extra, e.g. pip install 'pairuni-sidecar[{name}]'"
            ) from None
        _ENTRIES[kind][name] = entry = obj
    return entry


def tiny_main(family: str, argv: list[str] | None = None) -> int:
    """``python -m <builder module> OUT_DIR [--seed 0]``: one command line for every registered tiny builder."""
    import argparse

    p = argparse.ArgumentParser(description=f"Write a tiny random-init {family} model directory.")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(resolve("tiny", family)(a.out_dir, seed=a.seed))
    return 0


def load_all() -> dict[str, str]:
    """Import every lazy entry (for ``info`` / doctor); returns what failed, by ``kind:name``."""
    for kind in KINDS:
        for name in list(_ENTRIES[kind]):
            if isinstance(_ENTRIES[kind][name], str):
                try:
                    resolve(kind, name)
                except BadRequest:
                    pass
    return failures()


def failures() -> dict[str, str]:
    return dict(_FAILED)


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> None:
    """Import the built-in plug-ins and users' plug-in modules; each may declare ``PLUGINS``."""
    global _BUILTIN_OPS_LOADED
    _BUILTIN_OPS_LOADED = True
    for mod in (*BUILTIN_PLUGIN_MODULES, *modules):
        try:
            m = importlib.import_module(mod)
        except Exception as e:  # noqa: BLE001 - reported through `info`
            _FAILED[mod] = f"{type(e).__name__}: {e}"
            continue
        for kind, entries in (getattr(m, "PLUGINS", None) or {}).items():
            if kind == "op":
                for op_mod in entries:
                    try:
                        importlib.import_module(op_mod)
                    except Exception as e:  # noqa: BLE001
                        _FAILED[op_mod] = f"{type(e).__name__}: {e}"
            else:
                for name, target in entries.items():
                    register(kind, name, target)


def op(name: str, *, doc: str = "") -> Callable[[Handler], Handler]:
    """Register ``fn`` under the wire op name ``name`` (e.g. ``"tensor.sum"``)."""

    def deco(fn: Handler) -> Handler:
        cur = _ENTRIES["op"].get(name)
        if cur is not None and cur.fn is not fn:
            raise ValueError(f"op {name!r} registered twice ({cur.fn.__module__} and {fn.__module__})")
        _ENTRIES["op"][name] = OpSpec(name, fn, doc or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


def plugin(kind: str, name: str) -> Callable[[Any], Any]:
    """Decorator form of ``register`` (``@plugin("reward", "my_score")``)."""

    def deco(obj: Any) -> Any:
        register(kind, name, obj)
        return obj

    return deco


def run_op(name: str, ctx: "OpContext", args: dict, tensors: dict | None = None) -> Any:
    """Runs an op in process as the server does: declared defaults filled in (as the TS client does),
    args and payloads checked against the contract, then the handler. For tests and benches."""
    from .contract import validate_args, validate_payloads, with_defaults

    if not _BUILTIN_OPS_LOADED:
        load_plugins()
    spec = get_op(name)
    if spec is None:
        raise NotFound(f"unknown op {name!r}")
    args, tensors = with_defaults(name, args), tensors or {}
    validate_args(name, args)
    validate_payloads(name, tensors)
    return spec.fn(ctx, args, tensors)


def get_op(name: str) -> OpSpec | None:
    return _ENTRIES["op"].get(name)


def list_ops() -> dict[str, OpSpec]:
    return dict(_ENTRIES["op"])


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
            raise NotFound(
                f"no object under handle {handle!r} (freed, or created by an earlier sidecar process)"
            ) from None

    def free(self, handle: str) -> bool:
        with self._lock:
            return self._items.pop(handle, None) is not None

    def owned(self, prefix: str) -> list[str]:
        """Live handles made with ``prefix`` (e.g. every rollout before a new policy loads)."""
        with self._lock:
            return [h for h in self._items if h.startswith(f"{prefix}")]

    def describe(self) -> dict[str, int]:
        """Live objects per kind (handle prefix), for ``info``."""
        out: dict[str, int] = {}
        with self._lock:
            for h in self._items:
                k = h.rsplit(":", 1)[0]
                out[k] = out.get(k, 0) + 1
        return out

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
