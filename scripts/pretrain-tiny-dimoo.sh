#!/usr/bin/env sh
# Regenerate the shipped tiny ShapesWorld DiMOO (masked diffusion) from scratch (seed 0, resumable, one CPU thread).
cd "$(dirname "$0")/.." && exec nice -n 10 "${PAIRUNI_VENV:-.venv}/bin/python" -m pairuni_sidecar.shapesworld.pretrain_dimoo --out assets/tiny-dimoo-shapes --seed 0 "$@"
