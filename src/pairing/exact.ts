/**
 * Exact top-n lists on top of a float32 backend (docs/pairing.md §3.1).
 *
 * A backend returns the best n+m candidates per query by its float32 score. We rescore those in
 * f64, sort by (score desc, position asc), apply the threshold to the f64 score, and then *prove*
 * the list is the f64 answer: every candidate the backend did not return scores at most
 * B = (k-th f32 score, or the floor) + margin in f64, where margin bounds the f32 rounding error
 * (matrix.f32ScoreMargin). If the n-th kept score beats B, or B is below the threshold, nothing
 * unseen can enter the list. Queries that fail the proof are asked again with 4× more candidates,
 * until they pass or the whole database was returned. So every backend gives the f64 brute-force
 * result exactly, without ever materialising the |Q|×|D| score matrix.
 */
import { AbortedError } from '../errors.js';
import type { MatrixHandle, PairingBackend, TopkResult } from './backend/types.js';
import { dot64, f32ScoreMargin, type Matrix } from './matrix.js';

export interface ExactSide {
  /** The TS copy of the matrix (for f64 rescoring). */
  m: Matrix;
  /** The same matrix inside the backend. */
  h: MatrixHandle;
  /** Rows to use, ascending by convention (positions define the tie-break). All rows when omitted. */
  rows?: Int32Array;
}

export interface ExactSearchOptions {
  /** List length per query. */
  n: number;
  /** Keep only f64 scores ≥ threshold (the paper's δ). */
  threshold?: number;
  /** Extra f32 candidates fetched beyond n (m in the notes); more means fewer re-queries. */
  extra?: number;
  /** Rank by −q·d (least similar first). */
  negate?: boolean;
  /** 'ip': score q·d. 'assign': score q·c − ½‖c‖² (nearest centroid), d is the centroid matrix. */
  kind?: 'ip' | 'assign';
  /** Queries per backend call: progress and abort granularity. */
  batch?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface ExactLists {
  n: number;
  /** nq×n global row ids of the database matrix, −1 where the list is shorter. */
  idx: Int32Array;
  /** nq×n f64 scores, NaN where the list is shorter. */
  score: Float64Array;
  /** Length of each list. */
  len: Int32Array;
  /** Queries whose first candidate set could not be proven exact and were asked again. */
  requeried: number;
}

export async function exactSearch(
  backend: PairingBackend,
  q: ExactSide,
  d: ExactSide,
  opts: ExactSearchOptions,
): Promise<ExactLists> {
  const kind = opts.kind ?? 'ip';
  const qRows = q.rows ?? iota(q.m.rows);
  const dRows = d.rows ?? iota(d.m.rows);
  const nq = qRows.length;
  const nd = dRows.length;
  const n = opts.n;
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`exactSearch: n must be a positive integer, got ${n}`);
  if (kind === 'assign' && d.rows) throw new RangeError('exactSearch: assign searches all centroids');
  const out: ExactLists = {
    n,
    idx: new Int32Array(nq * n).fill(-1),
    score: new Float64Array(nq * n).fill(NaN),
    len: new Int32Array(nq),
    requeried: 0,
  };
  if (nq === 0 || nd === 0) return out;

  const sign = opts.negate ? -1 : 1;
  const bias = kind === 'assign' ? halfSqNorms(d.m) : undefined;
  const scale = kind === 'assign' ? Math.max(1, maxNorm(d.m)) : 1;
  const margin = f32ScoreMargin(q.m.cols) * 1.01 * scale;
  const threshold = opts.threshold;
  const floor = threshold === undefined ? undefined : threshold - 2 * margin;
  const batch = opts.batch ?? 4096;

  const runBackend = (rows: Int32Array, k: number): Promise<TopkResult> =>
    kind === 'assign'
      ? backend.assign(q.h, rows, d.h, k)
      : backend.topk({ q: q.h, qRows: rows, d: d.h, dRows: d.rows ? dRows : undefined, k, floor, negate: opts.negate });

  // Rescore one query's candidates and try to prove the list exact; write it to `out` if proven.
  const cand: { pos: number; s: number }[] = [];
  const finalize = (qi: number, res: TopkResult, r: number): boolean => {
    const k = res.k;
    const o = r * k;
    const qrow = qRows[qi];
    cand.length = 0;
    let returned = 0;
    for (let t = 0; t < k; t++) {
      const pos = res.idx[o + t];
      if (pos < 0) break;
      returned++;
      const drow = d.rows ? dRows[pos] : pos;
      let s = sign * dot64(q.m, qrow, d.m, drow);
      if (bias) s -= bias[drow];
      if (threshold === undefined || s >= threshold) cand.push({ pos, s });
    }
    cand.sort((a, b) => b.s - a.s || a.pos - b.pos);
    const len = Math.min(n, cand.length);
    let proven: boolean;
    if (k >= nd && returned === k) {
      proven = true; // the backend returned the whole database
    } else {
      // Upper bound on the f64 score of anything the backend did not return.
      const bound = (returned === k ? res.score[o + k - 1] : (floor ?? -Infinity)) + margin;
      proven = (threshold !== undefined && bound < threshold) || (len === n && cand[n - 1].s > bound);
    }
    if (!proven) return false;
    const w = qi * n;
    for (let t = 0; t < len; t++) {
      out.idx[w + t] = d.rows ? dRows[cand[t].pos] : cand[t].pos;
      out.score[w + t] = cand[t].s;
    }
    out.len[qi] = len;
    return true;
  };

  const k0 = Math.min(nd, n + (opts.extra ?? 4));
  for (let b0 = 0; b0 < nq; b0 += batch) {
    if (opts.signal?.aborted) throw new AbortedError('exact search aborted');
    const b1 = Math.min(nq, b0 + batch);
    let pending = Array.from({ length: b1 - b0 }, (_, t) => b0 + t);
    let k = k0;
    for (let round = 0; pending.length > 0; round++) {
      const rows = Int32Array.from(pending, (qi) => qRows[qi]);
      const res = await runBackend(rows, k);
      const failed: number[] = [];
      pending.forEach((qi, r) => {
        if (!finalize(qi, res, r)) failed.push(qi);
      });
      if (round === 0) out.requeried += failed.length;
      if (failed.length > 0 && k >= nd)
        throw new Error(
          'exactSearch: a full-database candidate set failed verification (backend returned inconsistent results)',
        );
      pending = failed;
      k = Math.min(nd, k * 4);
    }
    opts.onProgress?.(b1, nq);
  }
  return out;
}

export function halfSqNorms(c: Matrix): Float64Array {
  const out = new Float64Array(c.rows);
  for (let j = 0; j < c.rows; j++) out[j] = 0.5 * dot64(c, j, c, j);
  return out;
}

function maxNorm(m: Matrix): number {
  let best = 0;
  for (let j = 0; j < m.rows; j++) best = Math.max(best, dot64(m, j, m, j));
  return Math.sqrt(best);
}

export function iota(n: number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  return a;
}
