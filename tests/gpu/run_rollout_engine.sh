#!/usr/bin/env bash
# GPU check (one >=80 GiB GPU for 7B at 64 images): static-cache engine vs reference loop at Janus-Pro-1B/7B dims.
#   PYTHON=python3 OUT=/some/dir tests/gpu/run_rollout_engine.sh [--models 1b] [--images 16,64]
cd "$(dirname "$0")/../.." && PYTHONPATH="python_sidecar${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-.venv/bin/python}" tests/gpu/rollout_engine.py --out "${OUT:-.}/rollout_engine.json" "$@"
