"""Bench-only op for bench/reward.ts: enlarges a generation rollout's images in place (nearest
neighbour), so the tiny model's step carries images of a real model's size into its rewards."""

from __future__ import annotations

from pairuni_sidecar.errors import BadRequest
from pairuni_sidecar.registry import op


@op("bench.upscale_rollout", doc="repeat each pixel of a generation rollout's images factor x factor times")
def upscale_rollout(ctx, args, tensors):
    b = ctx.handles.get(args["handle"])
    f = int(args["factor"])
    if getattr(b, "images", None) is None or f < 1:
        raise BadRequest("bench.upscale_rollout: needs a generation rollout handle and factor >= 1")
    b.images = b.images.repeat_interleave(f, dim=1).repeat_interleave(f, dim=2).contiguous()
    return {"shape": list(b.images.shape)}
