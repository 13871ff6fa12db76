#!/usr/bin/env bash
# One-line GPU check (needs one >=80 GiB GPU): Lumina-DiMOO-8B-sized random masked-diffusion model,
# text + image rollouts (512 px, 35 steps, rollout 2, CFG), log-prob pass, one update, peak memory.
#   PYTHON=python3 OUT=/some/dir tests/gpu/run_dimoo_8b.sh      (extra arguments go to the script)
cd "$(dirname "$0")/../.." && PYTHONPATH="python_sidecar${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-.venv/bin/python}" tests/gpu/dimoo_8b_throughput.py --out "${OUT:-.}/dimoo_8b_throughput.json" "$@"
