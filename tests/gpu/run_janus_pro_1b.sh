#!/usr/bin/env bash
# One-line GPU check (needs one >=40 GiB GPU): Janus-Pro-1B-sized random model, rollout + update throughput.
#   PYTHON=python3 OUT=/some/dir tests/gpu/run_janus_pro_1b.sh      (extra arguments go to the script)
cd "$(dirname "$0")/../.." && PYTHONPATH="python_sidecar${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-.venv/bin/python}" tests/gpu/janus_pro_1b_throughput.py --out "${OUT:-.}/janus_pro_1b_throughput.json" "$@"
