"""Reference for `npm run bench -- pairing`: synthetic ResNet-like features and the same pairing
algorithm with scikit-learn + numpy (the paper's tooling).

  gen  --out X.f32 --nU .. --nG .. --d 2048 --topics 8000 --noise 1.65 --seed 0
       x = relu(C[topic] + noise·N(0,1) + 0.8·|bg|), L2-normalised float32 (docs/pairing.md §1)
  run  --x X.f32 --nU .. --nG .. --d .. --k .. --batch 1024 --topn 10 --delta 0.6 --seed 0
       sklearn MiniBatchKMeans(n_init=1, k-means++) → medoids (argmax x·c per cluster) → remove the
       aligned items → numpy brute-force top-n (chunked GEMM + argpartition) → greedy in G order.
Prints one JSON line with phase times, inertia, counts and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def gen(a) -> None:
    rng = np.random.default_rng(a.seed)
    n = a.nU + a.nG
    C = rng.standard_normal((a.topics, a.d)).astype(np.float32)
    bg = (0.8 * np.abs(rng.standard_normal(a.d))).astype(np.float32)
    with open(a.out, "wb") as f:
        for s in range(0, n, 8192):
            e = min(n, s + 8192)
            topic = rng.integers(0, a.topics, e - s)
            x = C[topic] + a.noise * rng.standard_normal((e - s, a.d), dtype=np.float32) + bg
            np.maximum(x, 0, out=x)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            f.write(x.astype("<f4").tobytes())
    print(json.dumps({"rows": n, "d": a.d}))


def run(a) -> None:
    from sklearn.cluster import MiniBatchKMeans

    n = a.nU + a.nG
    X = np.fromfile(a.x, dtype="<f4").reshape(n, a.d)
    t = {}
    t0 = time.perf_counter()
    km = MiniBatchKMeans(n_clusters=a.k, batch_size=a.batch, n_init=1, random_state=a.seed, compute_labels=True)
    km.fit(X)
    t["kmeans"] = time.perf_counter() - t0
    labels, C = km.labels_, km.cluster_centers_.astype(np.float32)

    t1 = time.perf_counter()
    ip = np.einsum("ij,ij->i", X, C[labels])  # ⟨x_i, c_label(i)⟩
    order = np.lexsort((np.arange(n), -ip, labels))  # per cluster: best score first, lower index on ties
    first = np.ones(n, bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    medoids = order[first]
    t["medoids"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    aligned = np.zeros(n, bool)
    aligned[medoids] = True
    u_rem = np.flatnonzero(~aligned[: a.nU])
    g_rem = a.nU + np.flatnonzero(~aligned[a.nU :])
    U = X[u_rem]
    used = np.zeros(len(u_rem), bool)
    pairs = 0
    chunk = 2048
    out = np.empty((chunk, len(u_rem)), np.float32)
    for s in range(0, len(g_rem), chunk):
        e = min(len(g_rem), s + chunk)
        S = np.matmul(X[g_rem[s:e]], U.T, out=out[: e - s])
        top = np.argpartition(-S, a.topn, axis=1)[:, : a.topn]
        for r in range(e - s):
            cand = top[r]
            sc = S[r, cand]
            o = np.argsort(-sc, kind="stable")
            for j in cand[o]:
                if S[r, j] < a.delta:
                    break
                if not used[j]:
                    used[j] = True
                    pairs += 1
                    break
    t["retrieval"] = time.perf_counter() - t2
    t["total"] = time.perf_counter() - t0
    sizes = np.bincount(labels, minlength=a.k)
    print(
        json.dumps(
            {
                "times_s": t,
                "inertia": float(km.inertia_),
                "steps": int(km.n_steps_),
                "aligned": int(len(medoids)),
                "non_empty": int((sizes > 0).sum()),
                "largest": int(sizes.max()),
                "singletons": int((sizes == 1).sum()),
                "retrieved": int(pairs),
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--x", required=True)
    for q in (g, r):
        q.add_argument("--nU", type=int, required=True)
        q.add_argument("--nG", type=int, required=True)
        q.add_argument("--d", type=int, default=2048)
        q.add_argument("--seed", type=int, default=0)
    g.add_argument("--topics", type=int, default=8000)
    g.add_argument("--noise", type=float, default=1.65)
    r.add_argument("--k", type=int, required=True)
    r.add_argument("--batch", type=int, default=1024)
    r.add_argument("--topn", type=int, default=10)
    r.add_argument("--delta", type=float, default=0.6)
    a = p.parse_args()
    gen(a) if a.cmd == "gen" else run(a)


if __name__ == "__main__":
    main()
