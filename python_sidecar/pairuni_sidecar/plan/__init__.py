"""``pairuni plan``: per-rank memory of a training configuration, from the real architecture built on
the meta device (no weights), before anything is launched.

- ``presets``: the paper's four models, their configs typed in from the published ones;
- ``arch``: the architecture of a family (preset or model directory) as parameter shapes, FSDP units,
  LoRA targets and the transformer geometry the activation estimate needs;
- ``memory``: one function per memory component, the total, the fit, and the cheapest listed change.
"""
