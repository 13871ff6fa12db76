/**
 * The reference backend: plain TypeScript, float64 accumulation, single thread. It is the oracle
 * the fast backends are compared against in tests, and is fine up to a few thousand points; at
 * paper scale use the sidecar backend (backend/sidecar.ts).
 */
import { ConfigError } from '../../errors.js';
import { dot64, matrix, type Matrix } from '../matrix.js';
import type { MatrixHandle, PairingBackend, TopkRequest, TopkResult } from './types.js';

/** Database rows scored per block: keeps a block of D hot in cache while queries stream over it. */
const DB_BLOCK = 256;

/** The pairing kernels in plain TypeScript: the tests' oracle, for a few thousand points at most. */
export class TsBackend implements PairingBackend {
  readonly name = 'ts';
  private readonly mats = new Map<number, Matrix>();
  private nextId = 1;

  async upload(m: Matrix): Promise<MatrixHandle> {
    const id = this.nextId++;
    this.mats.set(id, matrix(m.rows, m.cols, new Float32Array(m.data)));
    return { id, rows: m.rows, cols: m.cols };
  }

  async setRows(h: MatrixHandle, rows: Int32Array, values: Float32Array): Promise<void> {
    const m = this.get(h);
    if (values.length !== rows.length * m.cols)
      throw new RangeError(`setRows: ${values.length} values for ${rows.length} rows of ${m.cols}`);
    for (let r = 0; r < rows.length; r++) m.data.set(values.subarray(r * m.cols, (r + 1) * m.cols), rows[r] * m.cols);
  }

  async free(h: MatrixHandle): Promise<void> {
    this.mats.delete(h.id);
  }

  async gemmNT(
    a: MatrixHandle,
    aRows: Int32Array | undefined,
    b: MatrixHandle,
    bRows?: Int32Array,
  ): Promise<Float32Array> {
    const A = this.get(a);
    const B = this.get(b);
    checkCols(A, B);
    const ar = aRows ?? iota(A.rows);
    const br = bRows ?? iota(B.rows);
    const out = new Float32Array(ar.length * br.length);
    for (let i = 0; i < ar.length; i++) {
      for (let j = 0; j < br.length; j++) out[i * br.length + j] = dot64(A, ar[i], B, br[j]);
    }
    return out;
  }

  async assign(x: MatrixHandle, xRows: Int32Array | undefined, c: MatrixHandle, k: number): Promise<TopkResult> {
    const C = this.get(c);
    const bias = new Float64Array(C.rows);
    for (let j = 0; j < C.rows; j++) bias[j] = 0.5 * dot64(C, j, C, j);
    return this.search(this.get(x), xRows, C, undefined, k, -Infinity, false, bias);
  }

  async topk(req: TopkRequest): Promise<TopkResult> {
    return this.search(
      this.get(req.q),
      req.qRows,
      this.get(req.d),
      req.dRows,
      req.k,
      req.floor ?? -Infinity,
      req.negate ?? false,
    );
  }

  async close(): Promise<void> {
    this.mats.clear();
  }

  private get(h: MatrixHandle): Matrix {
    const m = this.mats.get(h.id);
    if (!m) throw new ConfigError(`ts backend: matrix handle ${h.id} was freed or belongs to another backend`);
    return m;
  }

  /**
   * Streaming top-k: each query keeps a sorted list of its best k (score desc, then position asc);
   * a new score enters only if it beats the current k-th (or fills a free slot) and clears the floor.
   * Database rows are visited in ascending position, so on equal scores the earlier row stays ahead.
   */
  private search(
    Q: Matrix,
    qRows: Int32Array | undefined,
    D: Matrix,
    dRows: Int32Array | undefined,
    k: number,
    floor: number,
    negate: boolean,
    bias?: Float64Array,
  ): TopkResult {
    checkCols(Q, D);
    const qr = qRows ?? iota(Q.rows);
    const dr = dRows ?? iota(D.rows);
    if (!(k >= 1) || k > dr.length) throw new RangeError(`topk: k=${k} must be in [1, ${dr.length}]`);
    const nq = qr.length;
    const idx = new Int32Array(nq * k).fill(-1);
    const score = new Float32Array(nq * k).fill(-Infinity);
    // Scores stay f64 while a query's list is built, then are stored as f32 (as a GPU/BLAS backend would).
    const best = new Float64Array(nq * k).fill(-Infinity);
    const fill = new Int32Array(nq);
    const sign = negate ? -1 : 1;
    for (let j0 = 0; j0 < dr.length; j0 += DB_BLOCK) {
      const j1 = Math.min(dr.length, j0 + DB_BLOCK);
      for (let qi = 0; qi < nq; qi++) {
        const o = qi * k;
        const qrow = qr[qi];
        for (let jj = j0; jj < j1; jj++) {
          let s = sign * dot64(Q, qrow, D, dr[jj]);
          if (bias) s -= bias[dr[jj]];
          if (s < floor) continue;
          const n = fill[qi];
          if (n === k && s <= best[o + k - 1]) continue;
          // Insert after every entry with score ≥ s (earlier positions win ties).
          let p = n === k ? k - 1 : n;
          while (p > 0 && best[o + p - 1] < s) {
            best[o + p] = best[o + p - 1];
            idx[o + p] = idx[o + p - 1];
            p--;
          }
          best[o + p] = s;
          idx[o + p] = jj;
          if (n < k) fill[qi] = n + 1;
        }
      }
    }
    for (let t = 0; t < best.length; t++) score[t] = best[t];
    return { k, idx, score };
  }
}

function checkCols(a: Matrix, b: Matrix): void {
  if (a.cols !== b.cols) throw new RangeError(`dimension mismatch: ${a.cols}-d vs ${b.cols}-d`);
}

function iota(n: number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  return a;
}
