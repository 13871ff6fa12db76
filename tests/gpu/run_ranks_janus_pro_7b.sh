#!/usr/bin/env bash
# Multi-GPU check: N ranks (default: every GPU) of FSDP2 PairGRPO at Janus-Pro-7B dims, memory per rank and step time.
#   PYTHON=python3 OUT=/some/dir NPROC=8 tests/gpu/run_ranks_janus_pro_7b.sh      (extra arguments go to the script)
cd "$(dirname "$0")/../.." && PYTHONPATH="python_sidecar${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-.venv/bin/python}" -m torch.distributed.run --standalone \
  --nproc-per-node "${NPROC:-$(nvidia-smi -L | wc -l)}" tests/gpu/ranks_janus_pro_7b.py --out "${OUT:-.}/ranks_janus_pro_7b.json" "$@"
