"""Why a tracker refused a command: travels back to the controller as a reply naming the sink."""

from __future__ import annotations

# Where each tracker's package is pinned: a missing one names the pin to install.
PINS = {"wandb": "wandb==0.31.0", "mlflow": "mlflow-skinny==3.17.2"}


class SinkFailure(Exception):
    """A tracker failed (or is missing); `sink` names it (`wandb`, `mlflow`), `what` the command."""

    def __init__(self, sink: str, what: str, message: str):
        super().__init__(message)
        self.sink = sink
        self.what = what


def import_tracker(sink: str, module: str):
    """The tracker's package, imported now (it is heavy: a run that does not log to it never pays)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise SinkFailure(
            sink,
            "start",
            f"the {sink} logger needs the Python package {PINS[sink]} in the sidecar's venv "
            f"(python_sidecar/requirements.lock pins it): {e}",
        ) from e
