"""Pairing kernels (src/pairing/backend/sidecar.ts): resident matrices + GEMM / assignment / top-k.

The TS side uploads the feature matrix once (``kernels.put``) and then refers to it by id, so a
paper-scale run ships 877 MB once instead of per call. Scores are float32 (BLAS / cuBLAS); the TS
exact layer rescores candidates in f64, so these kernels only need to be fast and deterministic.
The logic is in plain functions (``MatStore``, ``topk``, ``gemm_nt``) that pytest calls directly.
"""
from __future__ import annotations

import hashlib

import torch

from ..errors import BadRequest, NotFound
from ..registry import OpContext, Reply, op, require

STATE_KEY = "pairing.kernels"
Q_TILE = 2048
D_TILE = 8192


class MatStore:
    """Resident matrices by integer id, plus a one-entry cache of the last gathered row subset."""

    def __init__(self) -> None:
        self.mats: dict[int, torch.Tensor] = {}
        self.version: dict[int, int] = {}
        self.next_id = 1
        self._gather: tuple | None = None

    def put(self, t: torch.Tensor, device: str | torch.device = "cpu") -> int:
        if t.dim() != 2 or t.dtype != torch.float32:
            raise BadRequest(f"kernels.put: expected a 2-d float32 matrix, got {t.dtype} {tuple(t.shape)}")
        mid = self.next_id
        self.next_id += 1
        self.mats[mid] = t.to(device).contiguous()
        self.version[mid] = 0
        return mid

    def get(self, mid: int) -> torch.Tensor:
        m = self.mats.get(mid)
        if m is None:
            raise NotFound(f"matrix {mid} is not resident in this sidecar (freed, or uploaded to an earlier process)")
        return m

    def set_rows(self, mid: int, rows: torch.Tensor, values: torch.Tensor) -> None:
        m = self.get(mid)
        if values.shape != (rows.numel(), m.shape[1]):
            raise BadRequest(f"kernels.set_rows: values {tuple(values.shape)} do not match {rows.numel()} rows of width {m.shape[1]}")
        m.index_copy_(0, rows.to(m.device, torch.int64), values.to(m.device, torch.float32))
        self.version[mid] += 1

    def free(self, mid: int) -> bool:
        self.version.pop(mid, None)
        if self._gather and self._gather[0] == mid:
            self._gather = None
        return self.mats.pop(mid, None) is not None

    def rows(self, mid: int, rows: torch.Tensor | None, cache: bool = False) -> torch.Tensor:
        """The matrix, or a gathered copy of some rows. ``cache`` keeps one gathered subset
        (the retrieval database is asked for once per query batch)."""
        m = self.get(mid)
        if rows is None:
            return m
        r = rows.to(torch.int64)
        if not cache:
            return m.index_select(0, r.to(m.device))
        digest = hashlib.blake2b(r.numpy().tobytes(), digest_size=16).digest()
        key = (mid, self.version[mid], digest)
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
        s = ctx.state[STATE_KEY] = MatStore()
    return s


def _rows(tensors: dict, name: str) -> torch.Tensor | None:
    t = tensors.get(name)
    if t is None:
        return None
    if t.dtype not in (torch.int32, torch.int64) or t.dim() != 1:
        raise BadRequest(f"{name} must be a 1-d int32/int64 tensor")
    return t


@op("kernels.put", doc="make a float32 matrix resident; returns its id")
def op_put(ctx: OpContext, args: dict, tensors: dict) -> dict:
    m = tensors.get("m")
    if m is None:
        raise BadRequest("kernels.put: missing tensor 'm'")
    device = args.get("device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    mid = _store(ctx).put(m, device)
    return {"id": mid, "device": str(device)}


@op("kernels.set_rows", doc="overwrite rows of a resident matrix")
def op_set_rows(ctx: OpContext, args: dict, tensors: dict) -> dict:
    rows = _rows(tensors, "rows")
    if rows is None or "values" not in tensors:
        raise BadRequest("kernels.set_rows: needs tensors 'rows' and 'values'")
    _store(ctx).set_rows(require(args, "id", int, op_name="kernels.set_rows"), rows, tensors["values"])
    return {}


@op("kernels.free", doc="drop a resident matrix", idempotent=True)
def op_free(ctx: OpContext, args: dict, tensors: dict) -> dict:
    return {"freed": _store(ctx).free(require(args, "id", int, op_name="kernels.free"))}


@op("kernels.gemm_nt", doc="C = A[a_rows] · B[b_rows]ᵀ for resident A, B", idempotent=True)
def op_gemm_nt(ctx: OpContext, args: dict, tensors: dict) -> Reply:
    st = _store(ctx)
    A = st.rows(require(args, "a", int, op_name="kernels.gemm_nt"), _rows(tensors, "a_rows"))
    B = st.rows(require(args, "b", int, op_name="kernels.gemm_nt"), _rows(tensors, "b_rows"))
    return Reply({}, {"c": gemm_nt(A, B).cpu()})


@op("kernels.topk", doc="streaming top-k by inner product (mode 'ip') or nearest centroid (mode 'assign')", idempotent=True)
def op_topk(ctx: OpContext, args: dict, tensors: dict) -> Reply:
    st = _store(ctx)
    mode = args.get("mode", "ip")
    if mode not in ("ip", "assign"):
        raise BadRequest(f"kernels.topk: mode must be 'ip' or 'assign', got {mode!r}")
    Q = st.rows(require(args, "q", int, op_name="kernels.topk"), _rows(tensors, "q_rows"))
    D = st.rows(require(args, "d", int, op_name="kernels.topk"), _rows(tensors, "d_rows"), cache=True)
    bias = 0.5 * (D * D).sum(1) if mode == "assign" else None
    floor = args.get("floor")
    idx, score = topk(
        Q, D, require(args, "k", int, op_name="kernels.topk"),
        floor=float(floor) if floor is not None else None, negate=bool(args.get("negate", False)), bias=bias, check=ctx.check,
    )
    return Reply({}, {"idx": idx, "score": score})


def rss_bytes() -> int:
    """Peak resident set size of this process (bytes), for the benchmark's memory figure."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@op("kernels.stats", doc="peak RSS and resident matrices of this sidecar", idempotent=True)
def op_stats(ctx: OpContext, args: dict, tensors: dict) -> dict:
    st = _store(ctx)
    return {"peak_rss": rss_bytes(), "resident": {str(k): list(v.shape) for k, v in st.mats.items()}, "threads": torch.get_num_threads()}


__all__ = ["MatStore", "gemm_nt", "topk", "rss_bytes"]
