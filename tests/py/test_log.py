"""pairuni_sidecar.log: every line of a message carries the header and level the controller reads
(src/util/log.ts, sidecarLineLevel), written to stderr in one piece."""

from __future__ import annotations

import os
import re

import pytest

from pairuni_sidecar import log

HEADER = re.compile(r"^\[pairuni-sidecar (\d+) (\d+\.\d{4})\] (debug|info|warn|error): (.*)$")


@pytest.mark.parametrize("level", log.LEVELS)
def test_each_level_writes_its_name_after_the_header(level, capsys):
    getattr(log, level)(f"a {level} message")
    cap = capsys.readouterr()
    assert cap.out == ""
    m = HEADER.match(cap.err.rstrip("\n"))
    assert m is not None, cap.err
    assert (int(m[1]), m[3], m[4]) == (os.getpid(), level, f"a {level} message")


def test_a_multi_line_message_repeats_the_header_on_each_line(capsys):
    log.error('op x failed:\nTraceback (most recent call last):\n  File "a.py", line 1\nValueError: bad\n')
    lines = capsys.readouterr().err.split("\n")
    assert lines[-1] == ""  # ends with a newline, no empty trailing message line
    parsed = [HEADER.match(line) for line in lines[:-1]]
    assert all(parsed), lines
    assert [p[3] for p in parsed] == ["error"] * 4
    assert [p[4] for p in parsed] == [
        "op x failed:",
        "Traceback (most recent call last):",
        '  File "a.py", line 1',
        "ValueError: bad",
    ]
    assert len({p[2] for p in parsed}) == 1  # one message, one time stamp


def test_one_write_per_message(monkeypatch):
    writes: list[str] = []

    class Err:
        def write(self, s: str) -> None:
            writes.append(s)

        def flush(self) -> None:
            pass

    monkeypatch.setattr("sys.stderr", Err())
    log.warn("one\ntwo")
    assert len(writes) == 1 and writes[0].count("\n") == 2
