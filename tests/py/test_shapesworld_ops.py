"""Sidecar ops and CLI of ShapesWorld: registration, progress, cancellation, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pairuni_sidecar.errors import BadRequest, Cancelled, NotFound
from pairuni_sidecar.registry import HandleStore, OpContext, Reply, get_op, load_plugins, run_op
from pairuni_sidecar.shapesworld.render import render
from pairuni_sidecar.shapesworld.scenes import Obj

load_plugins()


def _ctx(name, events=None):
    return OpContext(name, 1, None, {}, HandleStore(), progress_cb=(events.append if events is not None else None))


def test_ops_are_registered_and_build_reports_progress(tmp_path):
    for name in ("shapesworld.build", "shapesworld.pretrain", "shapesworld.eval", "shapesworld.score"):
        assert get_op(name) is not None, name
    events = []
    ctx = _ctx("shapesworld.build", events)
    ctx._last_progress = -1e9
    res = run_op(
        "shapesworld.build",
        ctx,
        {"out": str(tmp_path), "seed": 2, "sizes": {"u_train": 12, "g_train": 12, "u_eval": 6, "g_eval": 6}},
        {},
    )
    assert res["sizes"]["u_train"] == 12 and (tmp_path / "g_eval.jsonl").exists()
    assert len((tmp_path / "u_train.jsonl").read_text().splitlines()) == 12
    assert events and events[-1]["done"] <= events[-1]["total"] == 36


def test_build_is_cancellable_and_validates_sizes(tmp_path):
    ctx = _ctx("shapesworld.build")
    ctx.cancel()
    with pytest.raises(Cancelled):
        run_op("shapesworld.build", ctx, {"out": str(tmp_path)}, {})
    with pytest.raises(BadRequest):
        run_op("shapesworld.build", _ctx("shapesworld.build"), {"out": str(tmp_path), "sizes": {"u_test": 3}}, {})
    with pytest.raises(BadRequest):
        run_op("shapesworld.build", _ctx("shapesworld.build"), {}, {})


def test_score_op_returns_both_rewards_as_tensors():
    imgs = torch.from_numpy(np.stack([render([Obj("square", "red", 0, 0)]), render([])]))
    rep = run_op(
        "shapesworld.score", _ctx("shapesworld.score"), {"prompts": ["a red square", "a red square"]}, {"images": imgs}
    )
    assert isinstance(rep, Reply)
    assert rep.tensors["graded"].tolist() == [1.0, 0.0] and rep.tensors["binary"].tolist() == [1.0, 0.0]
    assert rep.args["graded_mean"] == 0.5
    with pytest.raises(BadRequest):
        run_op("shapesworld.score", _ctx("shapesworld.score"), {"prompts": ["a square"]}, {})


def test_eval_op_reports_missing_model_as_not_found(tmp_path):
    with pytest.raises(NotFound):
        run_op("shapesworld.eval", _ctx("shapesworld.eval"), {"model_dir": str(tmp_path / "nope")}, {})


def test_cli_build_writes_manifests(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pairuni_sidecar.shapesworld",
            "build",
            "--out",
            str(tmp_path),
            "--seed",
            "1",
            "--u-train",
            "6",
            "--g-train",
            "6",
            "--u-eval",
            "6",
            "--g-eval",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    meta = json.loads(out.stdout)
    assert meta["seed"] == 1 and set(meta["manifests"]) == {"u_train", "g_train", "u_eval", "g_eval"}
    rec = json.loads((tmp_path / "u_eval.jsonl").read_text().splitlines()[0])
    assert (tmp_path / rec["image"]).is_file() and rec["caption"]
