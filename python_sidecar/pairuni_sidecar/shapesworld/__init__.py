"""ShapesWorld: a tiny seeded world of coloured shapes for the embedded PairUni demo.

- ``scenes`` / ``render`` / ``dataset``: the generator (GenEval's six categories) and JSONL manifests.
- ``prompts`` / ``detect`` / ``judge``: the programmatic generation reward (``rewards/shapes.py``).
- ``tokenizer`` / ``model`` / ``vq`` / ``sft`` / ``pretrain``: the tiny Janus trained from scratch.
- ``sampling`` / ``evaluate``: CFG image sampling, greedy MCQ answers, held-out metrics.

CLI: ``python -m pairuni_sidecar.shapesworld build|pretrain|eval ...``.
"""
