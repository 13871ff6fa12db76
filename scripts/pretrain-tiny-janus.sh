#!/usr/bin/env sh
# Regenerate the shipped tiny ShapesWorld Janus from scratch (seed 0, resumable, one CPU thread).
cd "$(dirname "$0")/.." && exec nice -n 15 "${PAIRUNI_VENV:-.venv}/bin/python" -m pairuni_sidecar.shapesworld pretrain --out assets/tiny-janus-shapes --seed 0 "$@"
