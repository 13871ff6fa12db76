/**
 * The fast backend: the three kernels run as ops in the PyTorch sidecar (python_sidecar/
 * pairuni_sidecar/ops/kernels.py) on BLAS (MKL/OpenBLAS) or CUDA. The feature matrix is uploaded
 * once and stays resident in the sidecar; each kernel call ships only row ids and small results.
 * Measured on 2 cores: ~300 GFLOP/s for the assignment GEMM (notes/pairing.md §2: BLAS class).
 */
import type { Matrix } from '../matrix.js';
import type { MatrixHandle, PairingBackend, TopkRequest, TopkResult } from './types.js';
import { Sidecar, Tensor, type SpawnOptions } from '../../sidecar/index.js';

export interface SidecarBackendOptions {
  /** 'auto' (CUDA when the sidecar has it), 'cpu', 'cuda', 'cuda:1', ... */
  device?: string;
}

export class SidecarBackend implements PairingBackend {
  readonly name = 'sidecar';
  private readonly device: string;

  /** Use a running sidecar; `close()` then leaves it running. */
  constructor(
    readonly sidecar: Sidecar,
    opts: SidecarBackendOptions = {},
    private readonly owns = false,
  ) {
    this.device = opts.device ?? 'auto';
  }

  /** Start a private sidecar for this backend; `close()` stops it. */
  static async spawn(opts: SidecarBackendOptions & { spawn?: SpawnOptions } = {}): Promise<SidecarBackend> {
    return new SidecarBackend(await Sidecar.spawn(opts.spawn), opts, true);
  }

  async upload(m: Matrix): Promise<MatrixHandle> {
    const r = await this.sidecar.call('kernels.put', { device: this.device }, { m: Tensor.from(m.data, [m.rows, m.cols]) });
    return { id: Number(r.args.id), rows: m.rows, cols: m.cols };
  }

  async setRows(h: MatrixHandle, rows: Int32Array, values: Float32Array): Promise<void> {
    await this.sidecar.call('kernels.set_rows', { id: h.id }, { rows: Tensor.from(rows), values: Tensor.from(values, [rows.length, h.cols]) });
  }

  async free(h: MatrixHandle): Promise<void> {
    await this.sidecar.call('kernels.free', { id: h.id });
  }

  async gemmNT(a: MatrixHandle, aRows: Int32Array | undefined, b: MatrixHandle, bRows?: Int32Array): Promise<Float32Array> {
    const t: Record<string, Tensor> = {};
    if (aRows) t.a_rows = Tensor.from(aRows);
    if (bRows) t.b_rows = Tensor.from(bRows);
    const r = await this.sidecar.call('kernels.gemm_nt', { a: a.id, b: b.id }, t);
    return r.tensors.c.data as Float32Array;
  }

  async assign(x: MatrixHandle, xRows: Int32Array | undefined, c: MatrixHandle, k: number): Promise<TopkResult> {
    const t: Record<string, Tensor> = {};
    if (xRows) t.q_rows = Tensor.from(xRows);
    return this.result(k, await this.sidecar.call('kernels.topk', { q: x.id, d: c.id, k, mode: 'assign' }, t));
  }

  async topk(req: TopkRequest): Promise<TopkResult> {
    const t: Record<string, Tensor> = {};
    if (req.qRows) t.q_rows = Tensor.from(req.qRows);
    if (req.dRows) t.d_rows = Tensor.from(req.dRows);
    const args: Record<string, unknown> = { q: req.q.id, d: req.d.id, k: req.k, mode: 'ip' };
    if (req.floor !== undefined && Number.isFinite(req.floor)) args.floor = req.floor;
    if (req.negate) args.negate = true;
    return this.result(req.k, await this.sidecar.call('kernels.topk', args, t));
  }

  /** Peak RSS of the sidecar process in bytes (for benchmarks). */
  async peakRss(): Promise<number> {
    const r = await this.sidecar.call('kernels.stats', {});
    return Number(r.args.peak_rss);
  }

  async close(): Promise<void> {
    if (this.owns) await this.sidecar.close();
  }

  private result(k: number, r: { tensors: Record<string, Tensor> }): TopkResult {
    return { k, idx: r.tensors.idx.data as Int32Array, score: r.tensors.score.data as Float32Array };
  }
}
