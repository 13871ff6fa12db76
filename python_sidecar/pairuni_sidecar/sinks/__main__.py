"""The trackers' child process: ``python -m pairuni_sidecar.sinks``.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout, in order.

- ``{"cmd": "start", "sinks": [{"type": "wandb", "dir", "project"?, "name"?, "mode", "id"?},
  {"type": "mlflow", "trackingUri", "experiment", "name"?, "runId"?}], "config": {...}}``
  → ``{"ok": true, "runs": {"wandb": {"id"}, "mlflow": {"runId"}}}`` (a given id continues that run)
- ``{"cmd": "log", "step", "scalars": {key: number}}``
- ``{"cmd": "table", "step", "name", "rows": [{...}]}`` (columns: the rows' keys, in order of appearance)
- ``{"cmd": "image", "step", "tag", "path"}``
- ``{"cmd": "close"}``: finishes every run, replies, exits.

``log``, ``table`` and ``image`` go to every tracker, or with ``"to": "wandb"`` to that one only.

Every reply is ``{"ok": true, ...}`` or ``{"ok": false, "sink", "what", "error"}``. Whatever a tracker
prints goes to stderr (with the child's warnings), never into the replies.
"""

from __future__ import annotations

import json
import os
import sys

from .errors import SinkFailure


def _replies():
    """The reply channel: the real stdout, with fd 1 pointed at stderr so nothing else can write to it."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def _sink(spec: dict, config: dict):
    if spec["type"] == "wandb":
        from .wandb_sink import WandbSink

        return WandbSink(spec, config)
    if spec["type"] == "mlflow":
        from .mlflow_sink import MlflowSink

        return MlflowSink(spec, config)
    raise SinkFailure(str(spec.get("type")), "start", f"no tracker named {spec.get('type')!r} (wandb, mlflow)")


def _apply(sinks: list, msg: dict) -> dict:
    cmd = msg.get("cmd")
    if cmd == "start":
        if sinks:
            raise SinkFailure("sinks", "start", "the trackers are already started")
        runs = {}
        try:
            for spec in msg["sinks"]:
                s = _sink(spec, msg.get("config") or {})
                sinks.append(s)
                runs[s.name] = _each(s, "start", s.start)
        except BaseException:
            # all or nothing: the trackers started so far are finished, a later start begins afresh
            for s in sinks:
                try:
                    s.close()
                except Exception:  # noqa: BLE001 - the start's own failure is the one reported
                    pass
            sinks.clear()
            raise
        return {"runs": runs}
    to = [s for s in sinks if msg.get("to") in (None, s.name)]
    if cmd == "log":
        for s in to:
            _each(s, "log", s.log, int(msg["step"]), msg["scalars"])
    elif cmd == "table":
        for s in to:
            _each(s, "table", s.table, int(msg["step"]), msg["name"], msg["rows"])
    elif cmd == "image":
        for s in to:
            _each(s, "image", s.image, int(msg["step"]), msg["tag"], msg["path"])
    elif cmd == "close":
        # every tracker is finished, even after one failed to; the first failure is the reply
        failed = None
        for s in sinks:
            try:
                _each(s, "close", s.close)
            except SinkFailure as e:
                failed = failed or e
        sinks.clear()
        if failed:
            raise failed
    else:
        raise SinkFailure("sinks", str(cmd), f"unknown command {cmd!r} (start, log, table, image, close)")
    return {}


def _each(sink, what: str, fn, *args):
    try:
        return fn(*args)
    except SinkFailure:
        raise
    except Exception as e:  # a tracker's own error, whatever its class: it goes back named
        raise SinkFailure(sink.name, what, f"{type(e).__name__}: {e}") from e


def main() -> int:
    # before wandb is imported: no banner lines, and no crash reports sent to W&B's error service
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    replies = _replies()
    sinks: list = []
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = None
        try:
            msg = json.loads(line)
            reply = {"ok": True, **_apply(sinks, msg)}
        except SinkFailure as e:
            reply = {"ok": False, "sink": e.sink, "what": e.what, "error": str(e)}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            reply = {"ok": False, "sink": "sinks", "what": "command", "error": f"bad command: {type(e).__name__}: {e}"}
        replies.write(json.dumps(reply) + "\n")
        if isinstance(msg, dict) and msg.get("cmd") == "close":
            return 0
    # stdin closed without `close` (the controller died): finish the runs so their files are complete
    for s in sinks:
        try:
            s.close()
        except Exception:  # noqa: BLE001 - nobody is left to tell
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
