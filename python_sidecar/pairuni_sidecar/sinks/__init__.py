"""Experiment trackers (W&B, MLflow) for the TS trainer's `loggers`, run as one local child process.

The controller (src/train/python-sinks.ts) starts ``python -m pairuni_sidecar.sinks`` on its own host
and sends one JSON command per line on stdin (protocol in ``__main__``); each gets one JSON reply line.
The trackers' packages are imported only when a run asks for them.
"""
