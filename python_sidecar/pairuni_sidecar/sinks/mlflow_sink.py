"""An MLflow run in a file store (`file:<out>/mlruns` by default), through the client API only."""

from __future__ import annotations

import os
import time

from .errors import import_tracker


class MlflowSink:
    name = "mlflow"

    def __init__(self, spec: dict, config: dict):
        self.spec = spec
        self.config = config
        self.client = None
        self.run_id: str | None = None

    def start(self) -> dict:
        # MLflow 3 refuses a file store unless asked for it (it is in maintenance mode); the run directory's
        # store needs no database, which is why it is the default here.
        if self.spec["trackingUri"].startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        tracking = import_tracker("mlflow", "mlflow.tracking")
        self.client = client = tracking.MlflowClient(tracking_uri=self.spec["trackingUri"])
        if self.spec.get("runId"):
            self.run_id = self.spec["runId"]
            client.update_run(self.run_id, status="RUNNING")
        else:
            name = self.spec.get("experiment", "pairuni")
            exp = client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp else client.create_experiment(name)
            run = client.create_run(exp_id, run_name=self.spec.get("name"))
            self.run_id = run.info.run_id
            # the config, flattened to dotted keys: MLflow's params are flat strings of at most 6000 characters
            params = _flat(self.config)
            from mlflow.entities import Param

            items = [Param(k, v[:6000]) for k, v in params.items()]
            for i in range(0, len(items), 100):  # a tracking server takes at most 100 params per log_batch
                client.log_batch(self.run_id, params=items[i : i + 100])
        return {"runId": self.run_id}

    def log(self, step: int, scalars: dict) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        metrics = [Metric(k, float(v), ts, step) for k, v in scalars.items()]
        # log_batch takes at most 1000 metrics per call
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def table(self, step: int, name: str, rows: list) -> None:
        self.client.log_dict(self.run_id, {"step": step, "rows": rows}, f"{name}/step-{step:06d}.json")

    def image(self, step: int, tag: str, path: str) -> None:
        self.client.log_artifact(self.run_id, path, tag)

    def close(self) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id)
            self.client = None


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif v is not None:
            out[f"{prefix}{k}"] = str(v)
    return out
