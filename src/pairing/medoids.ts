/**
 * Algorithm 1 lines 4–8: for every cluster k, the medoid i* = argmax_{i ∈ I_k} ⟨f_i, c_k⟩.
 * Scores are exact f64 dot products; equal scores go to the lower row id. Empty clusters have no
 * medoid (−1) and are counted in the diagnostics.
 */
import type { Rng } from '../util/prng.js';
import { dot64, type Matrix } from './matrix.js';

export function medoids(X: Matrix, C: Matrix, labels: Int32Array): { medoid: Int32Array; score: Float64Array } {
  const K = C.rows;
  const medoid = new Int32Array(K).fill(-1);
  const score = new Float64Array(K).fill(-Infinity);
  for (let i = 0; i < X.rows; i++) {
    const k = labels[i];
    const s = dot64(X, i, C, k);
    if (s > score[k]) {
      score[k] = s;
      medoid[k] = i;
    }
  }
  return { medoid, score };
}

/**
 * Table 9's ablation: one uniformly random member per non-empty cluster instead of the medoid
 * (reservoir sampling in row order, so one pass and one draw per point). −1 for empty clusters.
 */
export function randomMembers(labels: Int32Array, K: number, rng: Rng): Int32Array {
  const pick = new Int32Array(K).fill(-1);
  const seen = new Int32Array(K);
  for (let i = 0; i < labels.length; i++) {
    const k = labels[i];
    if (rng.int(++seen[k]) === 0) pick[k] = i;
  }
  return pick;
}

export interface ClusterDiagnostics {
  k: number;
  nonEmpty: number;
  empty: number;
  largest: number;
  singletons: number;
  /** Quantiles of the non-empty cluster sizes. */
  p50: number;
  p90: number;
  p99: number;
}

export function clusterDiagnostics(sizes: Int32Array): ClusterDiagnostics {
  const ne = Array.from(sizes)
    .filter((s) => s > 0)
    .sort((a, b) => a - b);
  const q = (p: number): number => (ne.length ? ne[Math.min(ne.length - 1, Math.floor(p * ne.length))] : 0);
  return {
    k: sizes.length,
    nonEmpty: ne.length,
    empty: sizes.length - ne.length,
    largest: ne.length ? ne[ne.length - 1] : 0,
    singletons: ne.filter((s) => s === 1).length,
    p50: q(0.5),
    p90: q(0.9),
    p99: q(0.99),
  };
}
