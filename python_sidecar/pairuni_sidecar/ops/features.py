"""Feature ops for pairing: load a backbone, embed encoded images, convert Parquet manifests.

Images travel as one uint8 blob plus int64 offsets (n+1), which keeps them inside the raw-tensor
subset of the wire protocol whatever their format. Logic lives in ``pairuni_sidecar.features``.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import BadRequest, NotFound
from ..features.backbones import Backbone, BackboneSpec, load_backbone
from ..features.embed import embed_images
from ..features.preprocess import ImageDecodeError
from ..fsutil import atomic_file
from ..registry import OpContext, Reply, op

STATE_KEY = "features.backbone"


def get_backbone(state: dict, spec_args: dict) -> Backbone:
    """Load (or reuse) a backbone; only the most recent one stays in memory."""
    spec = BackboneSpec(**spec_args)  # checked against its declaration at the boundary
    cached = state.get(STATE_KEY)
    if cached is not None and cached[0] == spec:
        return cached[1]
    state.pop(STATE_KEY, None)
    bb = load_backbone(spec)
    state[STATE_KEY] = (spec, bb)
    return bb


@op("features.backbone", doc="load a backbone (validating its weights); returns key, dim, device")
def op_backbone(ctx: OpContext, args: dict, tensors: dict) -> dict:
    bb = get_backbone(ctx.state, args["backbone"])
    if bb.dim < 0:  # HF models report their width after one forward pass
        from PIL import Image

        bb.embed([Image.new("RGB", (32, 32))])
    return {"key": bb.key, "dim": bb.dim, "device": str(bb.device), "kind": bb.kind}


@op("features.embed", doc="embed encoded images (blob + offsets) → L2-normalised float32 features")
def op_embed(ctx: OpContext, args: dict, tensors: dict) -> Reply:
    bb = get_backbone(ctx.state, args["backbone"])
    blob, offsets = tensors["blob"], tensors["offsets"]
    blob_np = blob.numpy()
    off = offsets.numpy().astype(np.int64)
    if off.ndim != 1 or len(off) < 1 or off[0] != 0 or off[-1] != len(blob_np) or np.any(np.diff(off) < 0):
        raise BadRequest("features.embed: offsets must start at 0, be non-decreasing and end at len(blob)")
    bs = args["batch_size"]
    try:
        feats = embed_images(
            bb, blob_np, off, bs, check=ctx.check, progress=lambda d, t: ctx.progress(d, t, "embedding")
        )
    except ImageDecodeError as e:
        raise BadRequest(str(e), detail={"index": e.index}) from None
    return Reply(
        {"key": bb.key, "dim": int(feats.shape[1]) if feats.size else bb.dim, "n": int(feats.shape[0])},
        {"features": feats},
    )


def parquet_to_arrow(path: str, out: str) -> dict:
    """Rewrite a Parquet file as an Arrow IPC file (atomically) that apache-arrow in TS can read."""
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    if not os.path.exists(path):
        raise NotFound(f"{path}: no such Parquet file")
    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise BadRequest(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    # arrow-js reads large_* types poorly; narrow them.
    import pyarrow as pa

    fields = []
    for f in table.schema:
        t = f.type
        if pa.types.is_large_string(t):
            t = pa.string()
        elif pa.types.is_large_binary(t):
            t = pa.binary()
        elif pa.types.is_large_list(t) and pa.types.is_large_string(t.value_type):
            t = pa.list_(pa.string())
        fields.append(pa.field(f.name, t))
    table = table.cast(pa.schema(fields))
    with atomic_file(out) as tmp, ipc.new_file(tmp, table.schema) as w:
        w.write_table(table)
    return {"rows": table.num_rows, "columns": table.column_names, "out": out}


@op("manifest.parquet_to_arrow", doc="convert a Parquet manifest to an Arrow IPC file for the TS readers")
def op_parquet_to_arrow(ctx: OpContext, args: dict, tensors: dict) -> dict:
    return parquet_to_arrow(args["path"], args["out"])
