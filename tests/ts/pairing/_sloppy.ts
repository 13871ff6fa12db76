/**
 * A test backend that behaves like a careless float32 BLAS: every score it reports carries a
 * deterministic error of up to 0.95 × the proven f32 margin, and candidates are ranked by those
 * perturbed scores (so near-ties come back in the wrong order and some true neighbours are missed).
 * The exact layer must still return the f64 answer.
 */
import type { MatrixHandle, PairingBackend, TopkRequest, TopkResult } from '../../../src/pairing/backend/types.js';
import { f32ScoreMargin, type Matrix } from '../../../src/pairing/matrix.js';

export class SloppyBackend implements PairingBackend {
  readonly name = 'sloppy';
  constructor(
    private readonly inner: PairingBackend,
    private readonly seed: number,
  ) {}

  upload(m: Matrix): Promise<MatrixHandle> {
    return this.inner.upload(m);
  }
  setRows(h: MatrixHandle, rows: Int32Array, values: Float32Array): Promise<void> {
    return this.inner.setRows(h, rows, values);
  }
  free(h: MatrixHandle): Promise<void> {
    return this.inner.free(h);
  }
  gemmNT(a: MatrixHandle, aRows: Int32Array | undefined, b: MatrixHandle, bRows?: Int32Array): Promise<Float32Array> {
    return this.inner.gemmNT(a, aRows, b, bRows);
  }
  close(): Promise<void> {
    return this.inner.close();
  }

  private noise(q: number, j: number, d: number): number {
    // splitmix-style hash of (seed, q, j) → [-1, 1)
    let h = (Math.imul(q, 0x9e3779b1) ^ Math.imul(j + this.seed, 0x85ebca6b)) >>> 0;
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
    h = Math.imul(h ^ (h >>> 12), 0x297a2d39) >>> 0;
    h = (h ^ (h >>> 15)) >>> 0;
    return (h / 2 ** 31 - 1) * 0.95 * f32ScoreMargin(d);
  }

  private async rank(
    q: MatrixHandle,
    qRows: Int32Array | undefined,
    d: MatrixHandle,
    dRows: Int32Array | undefined,
    k: number,
    score: (qi: number, j: number, dot: number) => number,
    floor: number,
  ): Promise<TopkResult> {
    const dots = await this.inner.gemmNT(q, qRows, d, dRows);
    const nq = qRows ? qRows.length : q.rows;
    const nd = dRows ? dRows.length : d.rows;
    const idx = new Int32Array(nq * k).fill(-1);
    const sc = new Float32Array(nq * k).fill(-Infinity);
    const order = Array.from({ length: nd }, (_, j) => j);
    const s = new Float64Array(nd);
    for (let r = 0; r < nq; r++) {
      const qid = qRows ? qRows[r] : r;
      for (let j = 0; j < nd; j++)
        s[j] = Math.fround(score(qid, j, dots[r * nd + j]) + this.noise(qid, dRows ? dRows[j] : j, q.cols));
      order.sort((a, b) => s[b] - s[a] || a - b);
      let t = 0;
      for (const j of order) {
        if (t === k || s[j] < floor) break;
        idx[r * k + t] = j;
        sc[r * k + t] = s[j];
        t++;
      }
    }
    return { k, idx, score: sc };
  }

  async topk(req: TopkRequest): Promise<TopkResult> {
    const sign = req.negate ? -1 : 1;
    return this.rank(req.q, req.qRows, req.d, req.dRows, req.k, (_q, _j, dot) => sign * dot, req.floor ?? -Infinity);
  }

  async assign(x: MatrixHandle, xRows: Int32Array | undefined, c: MatrixHandle, k: number): Promise<TopkResult> {
    const cn = await this.inner.gemmNT(c, undefined, c, undefined);
    const bias = Array.from({ length: c.rows }, (_, j) => 0.5 * cn[j * c.rows + j]);
    return this.rank(x, xRows, c, undefined, k, (_q, j, dot) => dot - bias[j], -Infinity);
  }
}
