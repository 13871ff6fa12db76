"""``plan``: per-rank memory of a training configuration (pairuni_sidecar.plan), built on the meta device."""

from __future__ import annotations

from ..plan.memory import PlanRequest, plan
from ..registry import OpContext, op


@op(
    "plan",
    doc="per-rank memory of a training configuration from the architecture built on the meta device, whether it fits, and the cheapest listed change that makes it fit",
)
def plan_op(ctx: OpContext, args: dict, tensors: dict) -> dict:
    return plan(PlanRequest(**args))
