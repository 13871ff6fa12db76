/**
 * The fast backend: the three kernels run as ops in the PyTorch sidecar (python_sidecar/
 * pairuni_sidecar/ops/kernels.py) on BLAS (MKL/OpenBLAS) or CUDA. The feature matrix is uploaded
 * once and stays resident in the sidecar; each kernel call ships only row ids and small results.
 * Measured on 2 cores: ~300 GFLOP/s for the assignment GEMM (docs/pairing.md §2: BLAS class).
 */
import { PairuniError } from '../../errors.js';
import type { Matrix } from '../matrix.js';
import type { MatrixHandle, PairingBackend, TopkRequest, TopkResult } from './types.js';
import { Sidecar, Tensor, type SpawnOptions } from '../../sidecar/index.js';

export interface SidecarBackendOptions {
  /** 'auto' (CUDA when the sidecar has it), 'cpu', 'cuda', 'cuda:1', ... */
  device?: string;
}

/** The pairing kernels as sidecar ops (BLAS or CUDA); the one to use at paper scale. */
export class SidecarBackend implements PairingBackend {
  readonly name = 'sidecar';
  private readonly device: string;

  /** Use a running sidecar; `close()` then leaves it running. */
  constructor(
    /** The sidecar the kernels run in. */
    readonly sidecar: Sidecar,
    opts: SidecarBackendOptions = {},
    private readonly owns = false,
  ) {
    this.device = opts.device ?? 'auto';
  }

  private readonly resident = new Map<number, string>();
  private nextId = 1;

  /** Start a private sidecar for this backend; `close()` stops it. */
  static async spawn(opts: SidecarBackendOptions & { spawn?: SpawnOptions } = {}): Promise<SidecarBackend> {
    return new SidecarBackend(await Sidecar.spawn(opts.spawn), opts, true);
  }

  async upload(m: Matrix): Promise<MatrixHandle> {
    const r = await this.sidecar.kernels.put({ device: this.device }, { m: Tensor.from(m.data, [m.rows, m.cols]) });
    const id = this.nextId++;
    this.resident.set(id, r.args.handle);
    return { id, rows: m.rows, cols: m.cols };
  }

  async setRows(h: MatrixHandle, rows: Int32Array, values: Float32Array): Promise<void> {
    await this.sidecar.kernels.setRows(
      { handle: this.handle(h) },
      { rows: Tensor.from(rows), values: Tensor.from(values, [rows.length, h.cols]) },
    );
  }

  async free(h: MatrixHandle): Promise<void> {
    const handle = this.resident.get(h.id);
    this.resident.delete(h.id);
    if (handle) await this.sidecar.handles.free({ handles: [handle] });
  }

  async gemmNT(
    a: MatrixHandle,
    aRows: Int32Array | undefined,
    b: MatrixHandle,
    bRows?: Int32Array,
  ): Promise<Float32Array> {
    const t: Record<string, Tensor> = {};
    if (aRows) t.a_rows = Tensor.from(aRows);
    if (bRows) t.b_rows = Tensor.from(bRows);
    const r = await this.sidecar.kernels.gemmNt({ a: this.handle(a), b: this.handle(b) }, t);
    return r.tensors.c.data as Float32Array;
  }

  async assign(x: MatrixHandle, xRows: Int32Array | undefined, c: MatrixHandle, k: number): Promise<TopkResult> {
    const t: Record<string, Tensor> = {};
    if (xRows) t.q_rows = Tensor.from(xRows);
    return this.result(
      k,
      await this.sidecar.kernels.topk({ q: this.handle(x), d: this.handle(c), k, mode: 'assign' }, t),
    );
  }

  async topk(req: TopkRequest): Promise<TopkResult> {
    const t: Record<string, Tensor> = {};
    if (req.qRows) t.q_rows = Tensor.from(req.qRows);
    if (req.dRows) t.d_rows = Tensor.from(req.dRows);
    const floor = req.floor !== undefined && Number.isFinite(req.floor) ? { floor: req.floor } : {};
    return this.result(
      req.k,
      await this.sidecar.kernels.topk(
        { q: this.handle(req.q), d: this.handle(req.d), k: req.k, mode: 'ip', negate: Boolean(req.negate), ...floor },
        t,
      ),
    );
  }

  /** Peak RSS of the sidecar process in bytes (for benchmarks). */
  async peakRss(): Promise<number> {
    return (await this.sidecar.kernels.stats()).args.peakRss;
  }

  async close(): Promise<void> {
    if (this.owns) await this.sidecar.close();
  }

  /** The sidecar handle (in its one handle store) behind a matrix id of this backend. */
  private handle(h: MatrixHandle): string {
    const s = this.resident.get(h.id);
    if (s === undefined) throw new PairuniError('data', `matrix ${h.id} is not resident (freed)`);
    return s;
  }

  private result(k: number, r: { tensors: Record<string, Tensor> }): TopkResult {
    return { k, idx: r.tensors.idx.data as Int32Array, score: r.tensors.score.data as Float32Array };
  }
}
