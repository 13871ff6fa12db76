"""The trackers' child (python -m pairuni_sidecar.sinks), driven over its stdin protocol with the real
wandb and mlflow packages, then read back by their own formats and clients: the W&B offline run file
(parsed with W&B's protobuf records) and MLflow's file store (MlflowClient)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pairuni_sidecar.sinks.errors import SinkFailure, import_tracker
from pairuni_sidecar.sinks.read import mlflow_run, wandb_runs

ROOT = Path(__file__).resolve().parents[2]


class Child:
    """One child process; each command waits for its reply line."""

    def __init__(self, cwd: Path):
        # W&B's and MLflow's own files go where scripts/pytest.mjs points them (the run's TMPDIR)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "python_sidecar")}
        self.p = subprocess.Popen(
            [sys.executable, "-m", "pairuni_sidecar.sinks"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
        )

    def __call__(self, **cmd) -> dict:
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, self.p.stderr.read()
        return json.loads(line)

    def close(self) -> str:
        assert self(cmd="close") == {"ok": True}
        assert self.p.wait(timeout=120) == 0
        err = self.p.stderr.read()
        self.p.stdout.close()
        self.p.stderr.close()
        self.p.stdin.close()
        return err


def specs(out: Path, runs: dict | None = None) -> list[dict]:
    runs = runs or {}
    return [
        {"type": "wandb", "dir": str(out), "mode": "offline", "project": "pairuni", **runs.get("wandb", {})},
        {"type": "mlflow", "trackingUri": f"file:{out}/mlruns", "experiment": "pairuni", **runs.get("mlflow", {})},
    ]


def loss(step: int) -> float:
    return 1.0 / (step + 1)


@pytest.fixture
def png(tmp_path: Path) -> Path:
    p = tmp_path / "samples" / "step-000003.png"
    p.parent.mkdir()
    Image.fromarray(np.full((8, 12, 3), 200, np.uint8)).save(p)
    return p


def test_scalars_table_and_image_read_back(tmp_path: Path, png: Path):
    out = tmp_path / "run"
    c = Child(tmp_path)
    started = c(cmd="start", sinks=specs(out), config={"steps": 3, "gen": {"k": 2}})
    assert started["ok"], started
    runs = started["runs"]
    for step in (1, 2):
        assert c(cmd="log", step=step, scalars={"loss": loss(step), "gen/reward": step * 0.25}) == {"ok": True}
    rows = [
        {"side": "gen", "pair_id": "p0", "image": "samples/step-000003.png", "reward": 0.5},
        {"side": "und", "pair_id": "p0", "answer": "B", "correct": True},
    ]
    reply = c(cmd="table", step=2, name="eval/samples", rows=rows)
    assert reply == {"ok": True}
    assert c(cmd="log", step=3, scalars={"loss": loss(3), "gen/reward": 0.75}) == {"ok": True}
    assert c(cmd="log", step=3, to="mlflow", scalars={"only/mlflow": 7.0}) == {"ok": True}
    assert c(cmd="image", step=3, tag="samples/gen", path=str(png)) == {"ok": True}
    c.close()

    (wb,) = wandb_runs(str(out / "wandb"))
    assert wb["id"] == runs["wandb"]["id"]
    scalars = {r["_step"]: (r["loss"], r["gen/reward"]) for r in wb["history"]}
    assert scalars == {s: (loss(s), s * 0.25) for s in (1, 2, 3)}
    at2 = next(r for r in wb["history"] if r["_step"] == 2)
    assert (at2["eval/samples/_type"], at2["eval/samples/nrows"], at2["eval/samples/ncols"]) == ("table-file", 2, 6)
    table = json.loads((Path(wb["dir"]) / "files" / at2["eval/samples/path"]).read_text())
    assert table["columns"] == ["side", "pair_id", "image", "reward", "answer", "correct"]
    assert table["data"] == [
        ["gen", "p0", "samples/step-000003.png", 0.5, None, None],
        ["und", "p0", None, None, "B", True],
    ]
    at3 = next(r for r in wb["history"] if r["_step"] == 3)
    assert (at3["samples/gen/_type"], at3["samples/gen/width"], at3["samples/gen/height"]) == ("image-file", 12, 8)
    assert "only/mlflow" not in at3

    ml = mlflow_run(f"file:{out}/mlruns", runs["mlflow"]["runId"])
    assert ml["status"] == "FINISHED"
    assert ml["metrics"]["loss"] == [[s, pytest.approx(loss(s))] for s in (1, 2, 3)]
    assert ml["metrics"]["gen/reward"] == [[1, 0.25], [2, 0.5], [3, 0.75]]
    assert ml["metrics"]["only/mlflow"] == [[3, 7.0]]
    assert sorted(ml["artifacts"]) == ["eval/samples/step-000002.json", "samples/gen/step-000003.png"]


def test_a_resumed_run_continues_the_same_runs(tmp_path: Path):
    out = tmp_path / "run"
    first = Child(tmp_path)
    runs = first(cmd="start", sinks=specs(out), config={})["runs"]
    for step in (1, 2):
        assert first(cmd="log", step=step, scalars={"loss": loss(step)})["ok"]
    first.close()
    second = Child(tmp_path)
    again = second(cmd="start", sinks=specs(out, runs), config={})
    assert again == {"ok": True, "runs": runs}
    for step in (3, 4):
        assert second(cmd="log", step=step, scalars={"loss": loss(step)})["ok"]
    # a step below the run's last one is dropped by W&B: the child says so rather than letting it vanish
    assert second(cmd="log", step=2, scalars={"loss": 9.0})["ok"]
    err = second.close()
    assert "wandb: scalars at step 2 not logged: the run is at step 4" in err

    # W&B offline writes a second run directory with the same id; `wandb sync` of both continues one run
    wb = wandb_runs(str(out / "wandb"))
    assert [r["id"] for r in wb] == [runs["wandb"]["id"]] * 2
    assert [[(h["_step"], h["loss"]) for h in r["history"]] for r in wb] == [
        [(1, loss(1)), (2, loss(2))],
        [(3, loss(3)), (4, loss(4))],
    ]
    ml = mlflow_run(f"file:{out}/mlruns", runs["mlflow"]["runId"])
    # MLflow keeps every value it is given: the controller sends each step once (src/train/python-sinks.ts)
    history = sorted((s, v) for s, v in ml["metrics"]["loss"])
    assert history == [(1, loss(1)), (2, loss(2)), (2, 9.0), (3, loss(3)), (4, loss(4))]
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"file:{out}/mlruns")
    exp = client.get_experiment_by_name("pairuni")
    assert [r.info.run_id for r in client.search_runs([exp.experiment_id])] == [runs["mlflow"]["runId"]]


def test_a_tracker_failure_comes_back_naming_the_tracker_and_the_command(tmp_path: Path):
    c = Child(tmp_path)
    reply = c(cmd="start", sinks=specs(tmp_path / "run", {"mlflow": {"runId": "0" * 32}}), config={})
    assert (reply["ok"], reply["sink"], reply["what"]) == (False, "mlflow", "start")
    assert "0" * 32 in reply["error"]
    # nothing stays started after a failed start: logging has no tracker to fail in
    assert c(cmd="log", step=1, scalars={"loss": 1.0}) == {"ok": True}
    bad = c(cmd="tabel", step=1)
    assert bad == {"ok": False, "sink": "sinks", "what": "tabel", "error": bad["error"]}
    assert "unknown command 'tabel'" in bad["error"]
    c.p.stdin.write("[1, 2]\n")  # not an object: refused, and the child goes on
    c.p.stdin.flush()
    assert json.loads(c.p.stdout.readline())["what"] == "command"
    c.close()


def test_a_missing_package_names_the_pin():
    with pytest.raises(SinkFailure) as e:
        import_tracker("wandb", "pairuni_no_such_module")
    assert (e.value.sink, e.value.what) == ("wandb", "start")
    assert "needs the Python package wandb==0.31.0 in the sidecar's venv" in str(e.value)


def test_a_config_of_many_keys_becomes_the_mlflow_runs_params(tmp_path: Path):
    config = {f"k{i}": {"a": i, "b": [i, i + 1]} for i in range(130)}  # 260 dotted params
    c = Child(tmp_path)
    started = c(cmd="start", sinks=specs(tmp_path / "run")[1:], config=config)
    assert started["ok"], started
    c.close()
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    params = MlflowClient(f"file:{tmp_path}/run/mlruns").get_run(started["runs"]["mlflow"]["runId"]).data.params
    assert len(params) == 260
    assert (params["k7.a"], params["k7.b"]) == ("7", "[7, 8]")
