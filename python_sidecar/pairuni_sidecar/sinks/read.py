"""Reads back what the trackers wrote, with their own formats and clients (tests and `--out DIR` checks).

W&B 0.31 ships no Python reader of its offline `run-ID.wandb` files: they are a LevelDB-style log
(a 7-byte header ``:W&B`` + magic 0xBEE1 + version 0, then 32 KiB blocks of records, each a 7-byte
header of CRC-32, length and type: full, first, middle, last) of ``wandb_internal_pb2.Record``
messages, parsed here with W&B's own protobuf classes. MLflow's are read with ``MlflowClient``.

``python -m pairuni_sidecar.sinks.read --wandb DIR --mlflow URI RUN_ID`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import struct
import zlib

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: str):
    """The protobuf records of one `.wandb` file, in order; a damaged record is an error naming its offset."""
    from wandb.proto import wandb_internal_pb2 as pb

    with open(path, "rb") as f:
        data = f.read()
    ident, magic, version = data[:4], *struct.unpack("<HB", data[4:7])
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(f"{path} is not a W&B 0.x run file (header {data[:7]!r})")
    pos, parts = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's tail too short for a header is zero padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0 and length == 0:  # padding to the block's end
            pos += left
            continue
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: bad checksum of the record at byte {pos}")
        pos += _HEADER + length
        if kind == _FULL:
            whole = chunk
        elif kind == _FIRST:
            parts = chunk
            continue
        elif kind == _MIDDLE:
            parts += chunk
            continue
        else:
            whole, parts = parts + chunk, b""
        rec = pb.Record()
        rec.ParseFromString(whole)
        yield rec


def wandb_run(run_dir: str) -> dict:
    """One offline run directory: its run id and history rows ``{"_step": n, key: value}``."""
    files = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    if len(files) != 1:
        raise ValueError(f"{run_dir} holds {len(files)} run files, not 1")
    run_id, rows = None, []
    for rec in wandb_records(files[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run_id = rec.run.run_id
        elif kind == "history":
            row = {"_step": rec.history.step.num}
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    row[key] = json.loads(item.value_json)
            rows.append(row)
    return {"id": run_id, "dir": run_dir, "history": rows}


def wandb_runs(wandb_dir: str) -> list[dict]:
    """Every offline run under a `wandb` directory, oldest first (a resumed run adds a directory of the same id)."""
    return [wandb_run(d) for d in sorted(glob.glob(os.path.join(wandb_dir, "offline-run-*")))]


def mlflow_run(tracking_uri: str, run_id: str) -> dict:
    """An MLflow run's metric histories ``{key: [[step, value], ...]}`` and artifact paths, via MlflowClient."""
    if tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    metrics = {
        k: [[m.step, m.value] for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)]
        for k in run.data.metrics
    }

    def artifacts(path: str | None = None) -> list[str]:
        out = []
        for a in client.list_artifacts(run_id, path):
            out += artifacts(a.path) if a.is_dir else [a.path]
        return out

    return {"runId": run_id, "status": run.info.status, "metrics": metrics, "artifacts": artifacts()}


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m pairuni_sidecar.sinks.read")
    ap.add_argument("--wandb", help="a `wandb` directory of offline runs")
    ap.add_argument("--mlflow", nargs=2, metavar=("TRACKING_URI", "RUN_ID"))
    a = ap.parse_args()
    out: dict = {}
    if a.wandb:
        out["wandb"] = wandb_runs(a.wandb)
    if a.mlflow:
        out["mlflow"] = mlflow_run(*a.mlflow)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
