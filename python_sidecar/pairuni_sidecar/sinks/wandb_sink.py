"""A W&B run: offline by default (files under the run directory, uploaded later with `wandb sync`)."""

from __future__ import annotations

import json
import os
import secrets
import string
from typing import Any

from .. import log
from .errors import import_tracker


def _cell(v: Any) -> Any:
    """A table cell W&B stores as is (numbers, strings, booleans, null); anything else as its JSON."""
    return v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v)


class WandbSink:
    name = "wandb"

    def __init__(self, spec: dict, config: dict):
        self.spec = spec
        self.config = config
        self.run = None
        self.wandb = None
        # W&B refuses a step below the last one it was given; a re-logged earlier step is dropped here, with a warning each time.
        self.last_step = -1

    def start(self) -> dict:
        wandb = self.wandb = import_tracker("wandb", "wandb")
        # W&B's own ids are 8 characters of [a-z0-9]
        run_id = self.spec.get("id") or "".join(
            secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8)
        )
        os.makedirs(self.spec["dir"], exist_ok=True)
        # The child's stdout is the reply channel and start-up must be quick: no console capture, git
        # probing, code or requirements snapshot, system metrics, or machine description.
        settings = wandb.Settings(
            console="off",
            silent=True,
            disable_git=True,
            disable_code=True,
            save_code=False,
            disable_job_creation=True,
            x_disable_stats=True,
            x_disable_meta=True,
            x_disable_machine_info=True,
            x_save_requirements=False,
        )
        self.run = wandb.init(
            mode=self.spec.get("mode", "offline"),
            dir=self.spec["dir"],
            project=self.spec.get("project"),
            name=self.spec.get("name"),
            id=run_id,
            resume="allow",
            config=self.config,
            settings=settings,
        )
        return {"id": run_id}

    def _at(self, step: int, what: str) -> bool:
        if step < self.last_step:
            log.warn(
                f"wandb: {what} at step {step} not logged: the run is at step {self.last_step} "
                "and W&B takes steps in increasing order only"
            )
            return False
        self.last_step = step
        return True

    def log(self, step: int, scalars: dict) -> None:
        if scalars and self._at(step, "scalars"):
            self.run.log(scalars, step=step)

    def table(self, step: int, name: str, rows: list) -> None:
        if not self._at(step, f"table {name}"):
            return
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        data = [[_cell(r.get(k)) for k in columns] for r in rows]
        self.run.log({name: self.wandb.Table(columns=columns, data=data)}, step=step)

    def image(self, step: int, tag: str, path: str) -> None:
        if self._at(step, f"image {tag}"):
            self.run.log({tag: self.wandb.Image(path)}, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
