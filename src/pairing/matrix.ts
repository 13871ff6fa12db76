/**
 * Dense row-major float32 matrices: the feature matrix F = L2Norm(F_u ∪ F_g) and the centroids.
 * The heavy products run in a backend (see backend/types.ts); this module holds the cheap exact
 * helpers the algorithm itself needs (f64 dot products for rescoring, norms, validation).
 */
import { DataError } from '../errors.js';

/** A dense float32 matrix, row-major (features: one row per image). */
export interface Matrix {
  /** Number of rows. */
  readonly rows: number;
  /** Number of columns (the feature dimension). */
  readonly cols: number;
  /** rows × cols values, row-major. */
  readonly data: Float32Array;
}

export function matrix(rows: number, cols: number, data?: Float32Array): Matrix {
  if (!Number.isInteger(rows) || rows < 0 || !Number.isInteger(cols) || cols < 1) {
    throw new RangeError(`bad matrix shape ${rows}×${cols}`);
  }
  const d = data ?? new Float32Array(rows * cols);
  if (d.length !== rows * cols)
    throw new RangeError(`matrix data has ${d.length} values, expected ${rows}×${cols}=${rows * cols}`);
  return { rows, cols, data: d };
}

export function row(m: Matrix, i: number): Float32Array {
  return m.data.subarray(i * m.cols, (i + 1) * m.cols);
}

/** Exact-as-f64 dot product of row i of A and row j of B (each f32 product is exact in f64). */
export function dot64(a: Matrix, i: number, b: Matrix, j: number): number {
  const d = a.cols;
  const A = a.data;
  const B = b.data;
  let oa = i * d;
  let ob = j * d;
  // Four independent accumulators: the sum order is fixed, so results are reproducible.
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  const end = oa + d - (d % 4);
  for (; oa < end; oa += 4, ob += 4) {
    s0 += A[oa] * B[ob];
    s1 += A[oa + 1] * B[ob + 1];
    s2 += A[oa + 2] * B[ob + 2];
    s3 += A[oa + 3] * B[ob + 3];
  }
  for (let r = d % 4; r > 0; r--, oa++, ob++) s0 += A[oa] * B[ob];
  return s0 + s1 + (s2 + s3);
}

/** ‖row i‖² in f64 for every row. */
export function sqNorms64(m: Matrix): Float64Array {
  const out = new Float64Array(m.rows);
  for (let i = 0; i < m.rows; i++) out[i] = dot64(m, i, m, i);
  return out;
}

/** A new matrix holding the listed rows of `m`, in that order. */
export function gatherRows(m: Matrix, rows: ArrayLike<number>): Matrix {
  const out = new Float32Array(rows.length * m.cols);
  for (let r = 0; r < rows.length; r++) {
    const i = rows[r];
    out.set(m.data.subarray(i * m.cols, (i + 1) * m.cols), r * m.cols);
  }
  return matrix(rows.length, m.cols, out);
}

/** Concatenate matrices with equal column counts (F_u ∪ F_g: U rows first, then G rows). */
export function concatRows(parts: Matrix[]): Matrix {
  if (parts.length === 0) throw new RangeError('concatRows needs at least one matrix');
  const cols = parts[0].cols;
  let rows = 0;
  for (const p of parts) {
    if (p.cols !== cols) throw new RangeError(`cannot stack a ${p.cols}-d matrix under a ${cols}-d one`);
    rows += p.rows;
  }
  const out = new Float32Array(rows * cols);
  let off = 0;
  for (const p of parts) {
    out.set(p.data, off);
    off += p.data.length;
  }
  return matrix(rows, cols, out);
}

export interface NormalizeReport {
  /** Rows whose norm was outside 1 ± tol before normalisation (they were rescaled). */
  renormalized: number;
}

/**
 * Algorithm 1 line 2: F ← L2Norm(F). Rejects non-finite values and all-zero rows with a DataError
 * that names the row (the caller's label says which set it came from); rescales every row whose
 * norm is off by more than `tol` and reports how many it touched.
 */
export function l2NormalizeRows(m: Matrix, label = 'features', tol = 1e-3): NormalizeReport {
  let renormalized = 0;
  const d = m.cols;
  for (let i = 0; i < m.rows; i++) {
    const r = m.data.subarray(i * d, (i + 1) * d);
    let s = 0;
    for (let k = 0; k < d; k++) {
      const v = r[k];
      if (!Number.isFinite(v))
        throw new DataError(`${label}: row ${i} has a non-finite value (${v}) at column ${k}`, undefined, i);
      s += v * v;
    }
    if (s === 0) throw new DataError(`${label}: row ${i} is all zeros and cannot be L2-normalised`, undefined, i);
    const norm = Math.sqrt(s);
    if (Math.abs(norm - 1) > tol) renormalized++;
    if (norm !== 1) {
      const inv = 1 / norm;
      for (let k = 0; k < d; k++) r[k] = r[k] * inv;
    }
  }
  return { renormalized };
}

/** Mean-centre then re-normalise a copy of `m` (optional pre-processing before clustering). */
export function centeredCopy(m: Matrix): Matrix {
  const d = m.cols;
  const mean = new Float64Array(d);
  for (let i = 0; i < m.rows; i++) {
    const o = i * d;
    for (let k = 0; k < d; k++) mean[k] += m.data[o + k];
  }
  for (let k = 0; k < d; k++) mean[k] /= m.rows;
  const out = new Float32Array(m.data.length);
  for (let i = 0; i < m.rows; i++) {
    const o = i * d;
    let s = 0;
    for (let k = 0; k < d; k++) {
      const v = m.data[o + k] - mean[k];
      out[o + k] = v;
      s += v * v;
    }
    // A row equal to the mean has no direction; leave it at zero rather than inventing one.
    if (s > 0) {
      const inv = 1 / Math.sqrt(s);
      for (let k = 0; k < d; k++) out[o + k] *= inv;
    }
  }
  return matrix(m.rows, d, out);
}

/**
 * Worst-case |f32 score − exact score| for a dot product of length d between vectors of norm ≤ 1,
 * whatever the summation order: γ_d = d·u/(1 − d·u) with u = 2⁻²⁴ (Higham, Accuracy and Stability,
 * §3.1), doubled to cover a bias term computed the same way, plus a few ulps for the subtraction.
 * Candidates are verified against this bound, so every backend returns the f64 answer.
 */
export function f32ScoreMargin(d: number): number {
  const u = 2 ** -24;
  const g = (d * u) / (1 - d * u);
  return 2 * g + 8 * u;
}
