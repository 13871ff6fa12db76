"""Pairing kernels (src/pairing/backend/sidecar.ts): resident matrices + GEMM / assignment / top-k.

The TS side uploads the feature matrix once (``kernels.put``) and then refers to it by handle, so a
paper-scale run ships 877 MB once instead of per call. Scores are float32 (BLAS / cuBLAS); the TS
exact layer rescores candidates in f64, so these kernels only need to be fast and deterministic.
The logic is in plain functions (``MatStore``, ``topk``, ``gemm_nt``) that pytest calls directly.
"""

from __future__ import annotations

import hashlib

import torch

from ..errors import BadRequest
from ..registry import HandleStore, OpContext, Reply, op

STATE_KEY = "pairing.kernels"
Q_TILE = 2048
D_TILE = 8192


class MatStore:
    """Resident matrices in the sidecar's one handle store (``handles.free`` drops them), plus a
    one-entry cache of the last gathered row subset."""

    def __init__(self, handles: HandleStore | None = None) -> None:
        self.handles = handles if handles is not None else HandleStore()
        self.version: dict[str, int] = {}
        self._gather: tuple | None = None

    def put(self, t: torch.Tensor, device: str | torch.device = "cpu") -> str:
        if t.dim() != 2 or t.dtype != torch.float32:
            raise BadRequest(f"kernels.put: expected a 2-d float32 matrix, got {t.dtype} {tuple(t.shape)}")
        h = self.handles.put(t.to(device).contiguous(), prefix="mat")
        self.version[h] = 0
        return h

    def get(self, mid: str) -> torch.Tensor:
        m = self.handles.get(mid)
        if not isinstance(m, torch.Tensor):
            raise BadRequest(f"handle {mid!r} is not a resident matrix")
        return m

    def set_rows(self, mid: str, rows: torch.Tensor, values: torch.Tensor) -> None:
        m = self.get(mid)
        if values.shape != (rows.numel(), m.shape[1]):
            raise BadRequest(
                f"kernels.set_rows: values {tuple(values.shape)} do not match {rows.numel()} rows of width {m.shape[1]}"
            )
        m.index_copy_(0, rows.to(m.device, torch.int64), values.to(m.device, torch.float32))
        self.version[mid] = self.version.get(mid, 0) + 1

    def free(self, mid: str) -> bool:
        self.version.pop(mid, None)
        if self._gather and self._gather[0] == mid:
            self._gather = None
        return self.handles.free(mid)

    def rows(self, mid: str, rows: torch.Tensor | None, cache: bool = False) -> torch.Tensor:
        """The matrix, or a gathered copy of some rows. ``cache`` keeps one gathered subset
        (the retrieval database is asked for once per query batch)."""
        m = self.get(mid)
        if rows is None:
            return m
        r = rows.to(torch.int64)
        if not cache:
            return m.index_select(0, r.to(m.device))
        digest = hashlib.blake2b(r.numpy().tobytes(), digest_size=16).digest()
        key = (mid, self.version.get(mid, 0), digest)
        if self._gather is None or self._gather[:3] != key:
            self._gather = None  # release the old copy before making the new one
            self._gather = (*key, m.index_select(0, r.to(m.device)))
        return self._gather[3]


def gemm_nt(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A·Bᵀ for a short A: computed as (B·Aᵀ)ᵀ, which BLAS runs as a skinny GEMM at memory speed."""
    return torch.mm(B, A.T).T.contiguous()


def topk(
    Q: torch.Tensor,
    D: torch.Tensor,
    k: int,
    *,
    floor: float | None = None,
    negate: bool = False,
    bias: torch.Tensor | None = None,
    check=None,
    q_tile: int = Q_TILE,
    d_tile: int = D_TILE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query row, the k best database rows by q·d (−q·d if ``negate``) − bias, streamed over
    tiles of D so the |Q|×|D| score matrix never exists. Scores below ``floor`` come back as
    (−1, −inf). Returns (idx int32 [nq, k], score float32 [nq, k]), scores descending."""
    nq, nd = Q.shape[0], D.shape[0]
    if not 1 <= k <= nd:
        raise BadRequest(f"kernels.topk: k={k} must be in [1, {nd}]")
    out_i = torch.empty((nq, k), dtype=torch.int64)
    out_v = torch.empty((nq, k), dtype=torch.float32)
    buf = torch.empty((min(q_tile, nq), min(d_tile, nd)), dtype=torch.float32, device=Q.device)
    for q0 in range(0, nq, q_tile):
        if check:
            check()
        q1 = min(nq, q0 + q_tile)
        Qt = Q[q0:q1]
        best_v = best_i = None
        for d0 in range(0, nd, d_tile):
            d1 = min(nd, d0 + d_tile)
            S = torch.mm(Qt, D[d0:d1].T, out=buf[: q1 - q0, : d1 - d0])
            if negate:
                S.neg_()
            if bias is not None:
                S.sub_(bias[d0:d1])
            if k == 1:
                v, i = S.max(dim=1, keepdim=True)
            else:
                v, i = torch.topk(S, min(k, d1 - d0), dim=1, sorted=True)
            i = i + d0
            if best_v is None:
                best_v, best_i = v, i
            else:
                v = torch.cat([best_v, v], 1)
                i = torch.cat([best_i, i], 1)
                if k == 1:
                    sel = v.argmax(dim=1, keepdim=True)
                else:
                    v, sel = torch.topk(v, min(k, v.shape[1]), dim=1, sorted=True)
                best_i = torch.gather(i, 1, sel)
                best_v = v if k > 1 else torch.gather(v, 1, sel)
        # Fewer than k columns only when nd < k, excluded above.
        out_v[q0:q1] = best_v.cpu()
        out_i[q0:q1] = best_i.cpu()
    if floor is not None:
        low = out_v < floor
        out_v[low] = float("-inf")
        out_i[low] = -1
    return out_i.to(torch.int32), out_v


def _store(ctx: OpContext) -> MatStore:
    s = ctx.state.get(STATE_KEY)
    if s is None:
        s = ctx.state[STATE_KEY] = MatStore(ctx.handles)
    return s


@op("kernels.put", doc="make a float32 matrix resident; returns its handle")
def op_put(ctx: OpContext, args: dict, tensors: dict) -> dict:
    device = args["device"]
    if device == "auto":
        from ..dist import default_device

        device = str(default_device())
    return {"handle": _store(ctx).put(tensors["m"], device), "device": str(device)}


@op("kernels.set_rows", doc="overwrite rows of a resident matrix")
def op_set_rows(ctx: OpContext, args: dict, tensors: dict) -> dict:
    _store(ctx).set_rows(args["handle"], tensors["rows"], tensors["values"])
    return {}


@op("kernels.gemm_nt", doc="C = A[a_rows] · B[b_rows]ᵀ for resident A, B")
def op_gemm_nt(ctx: OpContext, args: dict, tensors: dict) -> Reply:
    st = _store(ctx)
    A = st.rows(args["a"], tensors.get("a_rows"))
    B = st.rows(args["b"], tensors.get("b_rows"))
    return Reply({}, {"c": gemm_nt(A, B).cpu()})


@op("kernels.topk", doc="streaming top-k by inner product (mode 'ip') or nearest centroid (mode 'assign')")
def op_topk(ctx: OpContext, args: dict, tensors: dict) -> Reply:
    st = _store(ctx)
    Q = st.rows(args["q"], tensors.get("q_rows"))
    D = st.rows(args["d"], tensors.get("d_rows"), cache=True)
    bias = 0.5 * (D * D).sum(1) if args["mode"] == "assign" else None
    floor = args.get("floor")
    idx, score = topk(
        Q,
        D,
        args["k"],
        floor=float(floor) if floor is not None else None,
        negate=args["negate"],
        bias=bias,
        check=ctx.check,
    )
    return Reply({}, {"idx": idx, "score": score})


def rss_bytes() -> int:
    """Peak resident set size of this process (bytes), for the benchmark's memory figure."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@op("kernels.stats", doc="peak RSS and resident matrices of this sidecar")
def op_stats(ctx: OpContext, args: dict, tensors: dict) -> dict:
    st = _store(ctx)
    return {
        "peak_rss": rss_bytes(),
        "resident": {h: list(st.get(h).shape) for h in st.handles.owned("mat:")},
        "threads": torch.get_num_threads(),
    }


__all__ = ["MatStore", "gemm_nt", "topk", "rss_bytes"]
