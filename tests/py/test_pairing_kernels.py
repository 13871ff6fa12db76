"""Pairing kernels (ops/kernels.py) against numpy brute force and the golden fixtures."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from pairuni_sidecar.errors import BadRequest, NotFound
from pairuni_sidecar.ops.kernels import MatStore, gemm_nt, topk
from pairuni_sidecar.registry import run_op
from pairuni_sidecar.registry import HandleStore, OpContext

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pairing")


def rand(n, d, seed):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_topk(Q, D, k, bias=None, negate=False):
    S = Q.astype(np.float64) @ D.astype(np.float64).T
    if negate:
        S = -S
    if bias is not None:
        S = S - bias
    idx = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(S, idx, 1)


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("negate", [False, True])
def test_topk_streams_over_tiles_and_matches_brute_force(k, negate):
    Q, D = rand(37, 24, 1), rand(101, 24, 2)
    idx, val = topk(torch.from_numpy(Q), torch.from_numpy(D), k, negate=negate, q_tile=7, d_tile=13)
    ri, rv = ref_topk(Q, D, k, negate=negate)
    assert idx.dtype == torch.int32 and idx.shape == (37, k)
    np.testing.assert_array_equal(idx.numpy(), ri)  # random data: no near-ties
    np.testing.assert_allclose(val.numpy(), rv, atol=1e-6)


def test_topk_floor_and_assign_bias():
    Q, D = rand(20, 16, 3), rand(50, 16, 4) * 0.7  # centroid-like: norms < 1
    bias = 0.5 * (D.astype(np.float64) ** 2).sum(1)
    idx, val = topk(
        torch.from_numpy(Q), torch.from_numpy(D), 3, bias=torch.from_numpy(bias.astype(np.float32)), d_tile=8
    )
    ri, _ = ref_topk(Q, D, 3, bias=bias)
    np.testing.assert_array_equal(idx.numpy(), ri)
    # argmax of x·c − ½‖c‖² is argmin ‖x − c‖²
    dist = ((Q[:, None, :] - D[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(idx.numpy()[:, 0], dist.argmin(1))
    idx, val = topk(torch.from_numpy(Q), torch.from_numpy(rand(50, 16, 4)), 10, floor=0.3)
    v = val.numpy()
    assert np.all((v >= 0.3) | (v == -np.inf))
    assert np.all((idx.numpy() == -1) == (v == -np.inf))
    assert (idx.numpy() == -1).any() and (idx.numpy() >= 0).any()


def test_gemm_nt_and_store_lifecycle():
    A, B = rand(4, 8, 5), rand(30, 8, 6)
    np.testing.assert_allclose(gemm_nt(torch.from_numpy(A), torch.from_numpy(B)).numpy(), A @ B.T, atol=1e-6)
    st = MatStore()
    mid = st.put(torch.from_numpy(B.copy()))
    rows = torch.tensor([0, 2], dtype=torch.int32)
    g1 = st.rows(mid, rows, cache=True)
    assert st.rows(mid, rows, cache=True) is g1  # cached gather
    st.set_rows(mid, torch.tensor([2], dtype=torch.int32), torch.zeros(1, 8))
    g2 = st.rows(mid, rows, cache=True)
    assert g2 is not g1 and float(g2[1].abs().sum()) == 0  # version bump invalidated the cache
    with pytest.raises(BadRequest):
        st.set_rows(mid, torch.tensor([1], dtype=torch.int32), torch.zeros(2, 8))
    assert st.free(mid)
    with pytest.raises(NotFound):
        st.get(mid)


def test_ops_round_trip_through_handlers():
    c = OpContext("t", 1, None, {}, HandleStore())
    X = rand(60, 8, 7)
    mid = run_op("kernels.put", c, {"device": "cpu"}, {"m": torch.from_numpy(X.copy())})["handle"]
    run_op(
        "kernels.set_rows",
        c,
        {"handle": mid},
        {"rows": torch.tensor([5], dtype=torch.int32), "values": torch.from_numpy(X[6:7].copy())},
    )
    r = run_op(
        "kernels.topk",
        c,
        {"q": mid, "d": mid, "k": 2},
        {"q_rows": torch.tensor([6], dtype=torch.int32), "d_rows": torch.arange(0, 60, dtype=torch.int32)},
    )
    # Row 5 now equals row 6: both score 1 against query 6.
    assert sorted(r.tensors["idx"].numpy()[0].tolist()) == [5, 6]
    with pytest.raises(BadRequest, match="mode"):
        run_op("kernels.topk", c, {"q": mid, "d": mid, "k": 2, "mode": "l2"}, {})
    assert run_op("handles.free", c, {"handles": [mid]})["freed"] == 1  # one store, one free op
    with pytest.raises(NotFound):
        run_op("kernels.gemm_nt", c, {"a": mid, "b": mid})


def test_golden_top10_is_inside_the_f32_candidate_set():
    meta = json.load(open(os.path.join(FIX, "golden.json")))
    d = meta["d"]
    U = np.fromfile(os.path.join(FIX, "u.bin"), "<f4").reshape(-1, d)
    G = np.fromfile(os.path.join(FIX, "g.bin"), "<f4").reshape(-1, d)
    ref = np.fromfile(os.path.join(FIX, "knn_idx.bin"), "<i4").reshape(-1, meta["topN"])
    idx, _ = topk(torch.from_numpy(G), torch.from_numpy(U), meta["topN"] + 4, d_tile=512)
    cand = idx.numpy()
    assert all(set(ref[r]) <= set(cand[r]) for r in range(len(ref)))
    # With the f64 rescore (what src/pairing/exact.ts does), the lists are identical.
    S = G[:, None, :].astype(np.float64)
    for r in range(0, len(ref), 97):
        c = cand[r]
        s = U[c].astype(np.float64) @ S[r, 0]
        order = np.lexsort((c, -s))[: meta["topN"]]
        np.testing.assert_array_equal(c[order], ref[r])
