/**
 * Algorithm 1 line 3: C ← MiniBatchKMeans(F, K).
 *
 * Semantics follow sklearn's MiniBatchKMeans (the paper's tool), re-implemented from its documented
 * behaviour; the random streams are ours (util/prng.ts), so runs are reproducible per (seed, backend):
 *  - k-means++ (or random) seeding on a sample of init_size points;
 *  - each step draws `batchSize` points with replacement, assigns them to the nearest centre and
 *    moves each touched centre to the running mean of everything it has absorbed (learning rate
 *    1/count);
 *  - low-count centres (count < reassignmentRatio × max count) are moved to random points of the
 *    batch, at most half a batch at a time, whenever some centre is still empty or every 10·K
 *    samples; they restart at the smallest surviving count;
 *  - early stop when an exponentially weighted average of the per-point batch inertia has not
 *    improved for `maxNoImprovement` steps (or, with tol > 0, when centres stop moving);
 *  - an optional Lloyd refinement (full passes, centre = member mean) for better-separated clusters.
 * After fitting, labels are recomputed exactly (f64, exact.ts) for every point; clusters that end
 * up empty are reported, not assumed away.
 */
import { AbortedError, ConfigError } from '../errors.js';
import type { MatrixHandle, PairingBackend } from './backend/types.js';
import type { KMeansConfig } from './config.js';
import { exactSearch } from './exact.js';
import { kmeansPlusPlus } from './kmeanspp.js';
import { gatherRows, sqNorms64, type Matrix } from './matrix.js';
import { Rng } from '../util/prng.js';

export type StopReason = 'no-improvement' | 'tol' | 'max-epochs';

export interface KMeansResult {
  centers: Matrix;
  /** Exact nearest centre of every point (ties → lower centre id). */
  labels: Int32Array;
  /** Σ ‖x − c_label‖² in f64 over all points. */
  inertia: number;
  steps: number;
  epochs: number;
  stop: StopReason;
  /** Centres moved to random batch points during fitting. */
  reassigned: number;
  lloydIters: number;
  /** Points per cluster under the final labels. */
  sizes: Int32Array;
  timingsMs: { init: number; minibatch: number; lloyd: number; labels: number };
}

/**
 * A phase of the k-means fit, as progress reports it: `init` (k-means++ seeding, centres of K),
 * `minibatch` (mini-batch steps), `lloyd` (the optional full refinement iterations), `labels`
 * (the exact final assignment of every point).
 */
export type KMeansPhase = 'init' | 'minibatch' | 'lloyd' | 'labels';

export interface KMeansOptions {
  seed: number;
  signal?: AbortSignal;
  onProgress?: (phase: KMeansPhase, done: number, total: number) => void;
}

/**
 * Fit K centres to the rows of X (already uploaded to the backend as `xh`).
 * Centres are float32; the backend keeps its own copy in sync through setRows.
 */
export async function miniBatchKMeans(
  backend: PairingBackend,
  X: Matrix,
  xh: MatrixHandle,
  cfg: KMeansConfig,
  opts: KMeansOptions,
): Promise<KMeansResult> {
  const n = X.rows;
  const d = X.cols;
  const K = cfg.k;
  if (K > n) throw new ConfigError(`k-means: K=${K} clusters but only ${n} points; lower kmeans.k`);
  const rng = new Rng(opts.seed);
  const bs = Math.min(cfg.batchSize, n);
  let initSize = cfg.initSize ?? 3 * bs;
  if (initSize < K) initSize = 3 * K;
  initSize = Math.min(initSize, n);
  const check = (what: string): void => {
    if (opts.signal?.aborted) throw new AbortedError(`k-means aborted during ${what}`);
  };

  // --- seeding -------------------------------------------------------------------------------
  const t0 = performance.now();
  const sampleIdx = rng.sampleWithoutReplacement(n, initSize);
  let seeds: Int32Array;
  if (cfg.init === 'k-means++') {
    const S = gatherRows(X, sampleIdx);
    const sh = await backend.upload(S);
    try {
      seeds = await kmeansPlusPlus(backend, S, sh, K, rng, {
        signal: opts.signal,
        onProgress: (done, total) => opts.onProgress?.('init', done, total),
      });
    } finally {
      await backend.free(sh);
    }
  } else {
    seeds = rng.sampleWithoutReplacement(initSize, K);
  }
  const C = gatherRows(
    X,
    Array.from(seeds, (s) => sampleIdx[s]),
  );
  const ch = await backend.upload(C);
  const t1 = performance.now();

  try {
    const xn2 = sqNorms64(X);
    const counts = new Float64Array(K);
    const nSteps = Math.max(1, Math.floor((cfg.maxEpochs * n) / bs));
    const alpha = Math.min(1, (2 * bs) / (n + 1));
    const tolAbs = cfg.tol > 0 ? cfg.tol * meanVariance(X) : 0;
    let ewa: number | undefined;
    let ewaMin: number | undefined;
    let noImprovement = 0;
    let sinceReassign = 0;
    let reassigned = 0;
    let stop: StopReason = 'max-epochs';
    let step = 0;

    const batch = new Int32Array(bs);
    const sums = new Float64Array(K * d);
    const batchCount = new Int32Array(K);
    for (; step < nSteps; step++) {
      check('mini-batch steps');
      for (let b = 0; b < bs; b++) batch[b] = rng.int(n);
      const res = await backend.assign(xh, batch, ch, 1);

      // Batch inertia w.r.t. the centres before this step's update: ‖x−c‖² = ‖x‖² − 2(x·c − ½‖c‖²).
      let batchInertia = 0;
      const touched: number[] = [];
      for (let b = 0; b < bs; b++) {
        const c = res.idx[b];
        batchInertia += Math.max(0, xn2[batch[b]] - 2 * res.score[b]);
        if (batchCount[c]++ === 0) touched.push(c);
        const xo = batch[b] * d;
        const so = c * d;
        for (let t = 0; t < d; t++) sums[so + t] += X.data[xo + t];
      }

      // Each touched centre moves to the running mean of everything it has absorbed.
      touched.sort((a, b) => a - b);
      let shift = 0;
      for (const c of touched) {
        const old = counts[c];
        const tot = old + batchCount[c];
        const co = c * d;
        for (let t = 0; t < d; t++) {
          const v = (C.data[co + t] * old + sums[co + t]) / tot;
          if (tolAbs > 0) shift += (v - C.data[co + t]) ** 2;
          C.data[co + t] = v;
          sums[co + t] = 0;
        }
        counts[c] = tot;
        batchCount[c] = 0;
      }

      // Low-count centres restart at random batch points (sklearn's random reassignment).
      sinceReassign += bs;
      const changed = new Set<number>(touched);
      if (cfg.reassignmentRatio > 0 && (hasZero(counts) || sinceReassign >= 10 * K)) {
        sinceReassign = 0;
        const moved = reassignLowCount(C, counts, cfg.reassignmentRatio, X, batch, rng);
        for (const c of moved) changed.add(c);
        reassigned += moved.length;
      }
      if (changed.size > 0) {
        const rows = Int32Array.from([...changed].sort((a, b) => a - b));
        await backend.setRows(ch, rows, gatherRows(C, rows).data);
      }

      // Early stopping on the smoothed per-point batch inertia; the first step only measures the seeds.
      if (step === 0) {
        opts.onProgress?.('minibatch', 1, nSteps);
        continue;
      }
      const bi = batchInertia / bs;
      ewa = ewa === undefined ? bi : ewa * (1 - alpha) + bi * alpha;
      if (tolAbs > 0 && shift <= tolAbs) {
        stop = 'tol';
        step++;
        break;
      }
      if (ewaMin === undefined || ewa < ewaMin) {
        ewaMin = ewa;
        noImprovement = 0;
      } else if (cfg.maxNoImprovement !== null && ++noImprovement >= cfg.maxNoImprovement) {
        stop = 'no-improvement';
        step++;
        break;
      }
      if ((step & 7) === 0) opts.onProgress?.('minibatch', step + 1, nSteps);
    }
    opts.onProgress?.('minibatch', step, step);

    const t2 = performance.now();
    const lloydIters = await lloydRefine(backend, X, xh, C, ch, cfg.refineIters, opts);
    check('labelling');
    const t3 = performance.now();
    const final = await exactLabels(backend, X, xh, C, ch, opts);
    const t4 = performance.now();
    return {
      centers: C,
      labels: final.labels,
      inertia: final.inertia,
      steps: step,
      epochs: Math.ceil((step * bs) / n),
      stop,
      reassigned,
      lloydIters,
      sizes: final.sizes,
      timingsMs: { init: t1 - t0, minibatch: t2 - t1, lloyd: t3 - t2, labels: t4 - t3 },
    };
  } finally {
    await backend.free(ch);
  }
}

/**
 * Exact labels for fixed centres: the backend proposes candidates, exact.ts proves them in f64.
 * Used after fitting, and directly by tests ("given fixed centroids, labels equal the reference").
 */
export async function exactLabels(
  backend: PairingBackend,
  X: Matrix,
  xh: MatrixHandle,
  C: Matrix,
  ch: MatrixHandle,
  opts: { signal?: AbortSignal; onProgress?: (phase: KMeansPhase, done: number, total: number) => void } = {},
): Promise<{ labels: Int32Array; inertia: number; sizes: Int32Array }> {
  const lists = await exactSearch(
    backend,
    { m: X, h: xh },
    { m: C, h: ch },
    {
      n: 1,
      kind: 'assign',
      batch: 8192,
      signal: opts.signal,
      onProgress: (done, total) => opts.onProgress?.('labels', done, total),
    },
  );
  const xn2 = sqNorms64(X);
  const sizes = new Int32Array(C.rows);
  let inertia = 0;
  for (let i = 0; i < X.rows; i++) {
    sizes[lists.idx[i]]++;
    // ‖x − c‖² = ‖x‖² − 2(x·c − ½‖c‖²), with the exact f64 score.
    inertia += Math.max(0, xn2[i] - 2 * lists.score[i]);
  }
  return { labels: lists.idx, inertia, sizes };
}

/** Lloyd iterations: assign every point, move each centre to its members' mean (empty centres stay put). */
async function lloydRefine(
  backend: PairingBackend,
  X: Matrix,
  xh: MatrixHandle,
  C: Matrix,
  ch: MatrixHandle,
  iters: number,
  opts: KMeansOptions,
): Promise<number> {
  const n = X.rows;
  const d = X.cols;
  const K = C.rows;
  let prev: Int32Array | undefined;
  const chunk = 16384;
  for (let it = 0; it < iters; it++) {
    const labels = new Int32Array(n);
    for (let i0 = 0; i0 < n; i0 += chunk) {
      if (opts.signal?.aborted) throw new AbortedError('k-means aborted during Lloyd refinement');
      const rows = Int32Array.from({ length: Math.min(chunk, n - i0) }, (_, t) => i0 + t);
      const res = await backend.assign(xh, rows, ch, 1);
      labels.set(res.idx, i0);
    }
    if (prev && prev.every((v, i) => v === labels[i])) return it;
    const sums = new Float64Array(K * d);
    const cnt = new Int32Array(K);
    for (let i = 0; i < n; i++) {
      const c = labels[i];
      cnt[c]++;
      const xo = i * d;
      const so = c * d;
      for (let t = 0; t < d; t++) sums[so + t] += X.data[xo + t];
    }
    for (let c = 0; c < K; c++) {
      if (cnt[c] === 0) continue;
      for (let t = 0; t < d; t++) C.data[c * d + t] = sums[c * d + t] / cnt[c];
    }
    const all = Int32Array.from({ length: K }, (_, c) => c);
    await backend.setRows(ch, all, C.data);
    prev = labels;
    opts.onProgress?.('lloyd', it + 1, iters);
  }
  return iters;
}

function reassignLowCount(
  C: Matrix,
  counts: Float64Array,
  ratio: number,
  X: Matrix,
  batch: Int32Array,
  rng: Rng,
): number[] {
  const K = counts.length;
  let max = 0;
  for (let c = 0; c < K; c++) max = Math.max(max, counts[c]);
  let low: number[] = [];
  for (let c = 0; c < K; c++) if (counts[c] < ratio * max) low.push(c);
  if (low.length === 0) return [];
  // At most half a batch moves at once: the lowest counts first (ties → lower centre id).
  const cap = Math.floor(0.5 * batch.length);
  if (low.length > cap)
    low = low
      .sort((a, b) => counts[a] - counts[b] || a - b)
      .slice(0, cap)
      .sort((a, b) => a - b);
  if (low.length === 0) return [];
  const isLow = new Uint8Array(K);
  for (const c of low) isLow[c] = 1;
  let minKept = Infinity;
  for (let c = 0; c < K; c++) if (!isLow[c]) minKept = Math.min(minKept, counts[c]);
  const picks = rng.sampleWithoutReplacement(batch.length, low.length);
  const d = C.cols;
  low.forEach((c, t) => {
    const xo = batch[picks[t]] * d;
    C.data.set(X.data.subarray(xo, xo + d), c * d);
    counts[c] = Number.isFinite(minKept) ? minKept : 0;
  });
  return low;
}

function hasZero(a: Float64Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] === 0) return true;
  return false;
}

function meanVariance(X: Matrix): number {
  const d = X.cols;
  const mean = new Float64Array(d);
  const sq = new Float64Array(d);
  for (let i = 0; i < X.rows; i++) {
    for (let t = 0; t < d; t++) {
      const v = X.data[i * d + t];
      mean[t] += v;
      sq[t] += v * v;
    }
  }
  let s = 0;
  for (let t = 0; t < d; t++) {
    const m = mean[t] / X.rows;
    s += sq[t] / X.rows - m * m;
  }
  return s / d;
}
