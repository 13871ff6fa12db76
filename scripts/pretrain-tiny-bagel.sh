#!/usr/bin/env sh
# Regenerate the shipped tiny ShapesWorld Bagel (VAE, then joint SFT) from scratch (seed 0, resumable, one CPU thread).
cd "$(dirname "$0")/.." && exec nice -n 10 "${PAIRUNI_VENV:-.venv}/bin/python" -m pairuni_sidecar.shapesworld.pretrain_bagel --out assets/tiny-bagel-shapes --seed 0 "$@"
