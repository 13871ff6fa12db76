"""ShapesWorld: a tiny seeded world of coloured shapes for the embedded PairUni demo.

- ``scenes`` / ``render`` / ``dataset``: the generator (GenEval's six categories) and JSONL manifests.
- ``prompts`` / ``detect`` / ``judge``: the programmatic generation reward (``reward``, registered as ``shapes``).
- ``tokenizer`` / ``model`` / ``vq`` / ``sft`` / ``pretrain``: the tiny Janus trained from scratch.
- ``evaluate``: held-out metrics through the policy adapter (``greedy_answers``, ``sample_images``), so
  any model family with an adapter is evaluated the same way.
- ``codec``: the tiny DiMOO's exact image codec (registered as codec ``shapes``).
- ``plugins``: what the toy world registers (reward, codec, ops). The framework never imports this
  package; it reaches those plug-ins by name (tests/py/test_toy_world_walled.py holds the wall).

CLI: ``python -m pairuni_sidecar.shapesworld build|pretrain|eval ...``.
"""
