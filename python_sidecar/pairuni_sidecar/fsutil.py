"""The one way the sidecar replaces a file or a directory: readers (and a crash) see the old content or
the new, never a partial write.

Temp names sit beside the target (rename is only atomic within one filesystem), start with a dot so
directory scans skip them, and carry pid + random so concurrent writers never share one. The same
scheme as ``src/util/atomic.ts`` on the TypeScript side.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["atomic_dir", "atomic_file", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "fsync_dir"]


def _sibling(final: str, kind: str) -> str:
    head, base = os.path.split(final)
    return os.path.join(head, f".{base}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory's entries so a rename into it survives a power loss (best effort: not every
    platform or filesystem can fsync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    with open(path, "r+b") as f:  # writable: Windows refuses to fsync a read-only handle
        os.fsync(f.fileno())


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temp file path beside ``path`` for writers that insist on a path (``torch.save``,
    ``PIL.Image.save``, ``pyarrow.ipc.new_file``); on success it is fsynced and renamed onto ``path``."""
    final = os.path.abspath(path)
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = _sibling(final, "tmp")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, end: str = "\n", **json_kwargs: Any) -> None:
    """``json.dumps(obj, **json_kwargs) + end``; ``end`` exists because some existing files have no
    trailing newline and their bytes must not change."""
    atomic_write_text(path, json.dumps(obj, **json_kwargs) + end)


def _fsync_tree(root: str) -> None:
    # The rename must not become durable before the contents it publishes.
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                _fsync_file(p)
        fsync_dir(dirpath)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
    """Yield an empty temp directory beside ``path``; on success its tree is fsynced and it replaces
    ``path`` (an existing directory is moved aside first, then removed); on failure it is removed."""
    final = os.path.abspath(path)
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = _sibling(final, "tmp")
    os.makedirs(tmp)
    try:
        yield tmp
        _fsync_tree(tmp)
        if os.path.lexists(final):
            # Directories cannot be renamed over a non-empty one; the window where ``final`` is
            # missing is two renames wide and a failure in it puts the old directory back.
            old = _sibling(final, "old")
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.replace(old, final)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(parent)
