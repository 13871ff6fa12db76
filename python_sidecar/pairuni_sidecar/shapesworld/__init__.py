"""ShapesWorld: a tiny seeded world of coloured shapes for the embedded PairUni demo.

- ``scenes`` / ``render`` / ``dataset``: the generator (GenEval's six categories) and JSONL manifests.
- ``prompts`` / ``detect`` / ``judge``: the programmatic generation reward (``rewards/shapes.py``).
- ``tokenizer`` / ``model`` / ``vq`` / ``sft`` / ``pretrain``: the tiny Janus trained from scratch.
- ``evaluate``: held-out metrics through the policy adapter (``greedy_answers``, ``sample_images``), so
  any model family with an adapter is evaluated the same way.

CLI: ``python -m pairuni_sidecar.shapesworld build|pretrain|eval ...``.
"""
