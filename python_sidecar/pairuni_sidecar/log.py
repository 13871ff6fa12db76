"""The sidecar's own messages, one helper so that each line carries its level.

Every line goes to stderr as ``[pairuni-sidecar PID T] LEVEL: text`` (T: ``time.monotonic()``), a
multi-line message (a traceback) with the header on each line, so that the controller, which reads
the stderr of a spawned sidecar line by line, hands each line to the embedding program's logger at
that level (src/util/log.ts, ``sidecarLineLevel``). Lines written any other way (Python warnings,
library logging, a crash's traceback) reach that logger at debug.

Levels: ``debug`` for what only a developer reads (traces, the traceback of an op whose error the
caller receives anyway, start and stop), ``info`` for the normal life of a rank worth a line,
``warn`` for what the user may have to act on, ``error`` for a fault of the sidecar itself.
"""

from __future__ import annotations

import os
import sys
import time

LEVELS = ("debug", "info", "warn", "error")


def _write(level: str, msg: str) -> None:
    head = f"[pairuni-sidecar {os.getpid()} {time.monotonic():.4f}] {level}: "
    # One write per message: lines of two threads' messages never interleave mid-line.
    sys.stderr.write("".join(f"{head}{line}\n" for line in str(msg).rstrip("\n").split("\n")))
    sys.stderr.flush()


def debug(msg: str) -> None:
    _write("debug", msg)


def info(msg: str) -> None:
    _write("info", msg)


def warn(msg: str) -> None:
    _write("warn", msg)


def error(msg: str) -> None:
    _write("error", msg)
