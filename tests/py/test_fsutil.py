"""fsutil: atomic file and directory replacement (content, replacement, no temp leftovers, failures)."""

import json
import os
import shutil

import pytest

from pairuni_sidecar.fsutil import atomic_dir, atomic_file, atomic_write_bytes, atomic_write_json, atomic_write_text


@pytest.fixture
def d(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_write_bytes_creates_parents(d):
    p = d / "a" / "b" / "f.bin"
    atomic_write_bytes(p, b"\x00\x01\xff")
    assert p.read_bytes() == b"\x00\x01\xff"
    assert os.listdir(p.parent) == ["f.bin"]


def test_write_text_replaces_and_leaves_no_temp(d):
    p = d / "f.txt"
    p.write_text("old")
    atomic_write_text(p, "new é\n")
    assert p.read_bytes() == "new é\n".encode()
    assert os.listdir(d) == ["f.txt"]


def test_write_json_formatting(d):
    p = d / "x.json"
    atomic_write_json(p, {"a": [1]}, indent=2)
    assert p.read_text() == json.dumps({"a": [1]}, indent=2) + "\n"
    atomic_write_json(p, {"a": 1}, end="")
    assert p.read_text() == '{"a": 1}'


def test_parent_is_a_file_raises_and_keeps_old(d):
    parent = d / "notadir"
    parent.write_text("old")
    with pytest.raises(OSError):
        atomic_write_text(parent / "f.txt", "x")
    assert parent.read_text() == "old"
    assert os.listdir(d) == ["notadir"]


def test_failed_writer_keeps_old_content_and_removes_temp(d):
    p = d / "f.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(p) as tmp:
            with open(tmp, "w") as f:
                f.write("partial")
            raise RuntimeError("writer failed")
    assert p.read_text() == "old"
    assert os.listdir(d) == ["f.txt"]


def test_atomic_dir_creates_and_replaces(d):
    target = d / "model"
    with atomic_dir(target) as tmp:
        assert os.path.dirname(tmp) == str(d) and os.listdir(tmp) == []
        (d / tmp / "a.txt").write_text("1")
    assert sorted(os.listdir(target)) == ["a.txt"]
    with atomic_dir(target) as tmp:
        os.makedirs(os.path.join(tmp, "sub"))
        with open(os.path.join(tmp, "sub", "b.txt"), "w") as f:
            f.write("2")
    assert sorted(os.listdir(target)) == ["sub"]
    assert (target / "sub" / "b.txt").read_text() == "2"
    assert os.listdir(d) == ["model"]


def test_atomic_dir_failure_keeps_old_and_removes_temp(d):
    target = d / "model"
    target.mkdir()
    (target / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            with open(os.path.join(tmp, "a.txt"), "w") as f:
                f.write("new")
            raise RuntimeError("save failed")
    assert (target / "a.txt").read_text() == "old"
    assert os.listdir(d) == ["model"]
