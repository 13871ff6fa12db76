/**
 * The three heavy kernels of the pairing pipeline, behind one small interface. Everything else
 * (k-means bookkeeping, medoids, greedy matching, f64 rescoring) is plain TS in src/pairing.
 *
 * Matrices are uploaded once and referred to by handle, so a backend can keep them resident (the
 * sidecar backend keeps the 107K×2048 feature matrix in the Python process and never re-sends it).
 * Row selections are global row ids of the handle's matrix. Scores are float32-class: callers that
 * need exact answers rescore candidates in f64 (see exact.ts), so a backend only has to be fast and
 * deterministic, with ties going to the lower index where it can.
 */
import type { Matrix } from '../matrix.js';

export interface MatrixHandle {
  readonly id: number;
  readonly rows: number;
  readonly cols: number;
}

export interface TopkRequest {
  /** Query matrix and the rows of it to use (all rows when omitted). */
  q: MatrixHandle;
  qRows?: Int32Array;
  /** Database matrix and the rows of it to search (all rows when omitted). */
  d: MatrixHandle;
  dRows?: Int32Array;
  /** Candidates to keep per query (≤ the number of database rows). */
  k: number;
  /** Scores strictly below `floor` are never returned (default: no floor). */
  floor?: number;
  /** Score = −q·d instead of q·d (used to find the *least* similar items). */
  negate?: boolean;
}

export interface TopkResult {
  /** Candidates per query (= the request's k). */
  k: number;
  /** nq×k positions into the database selection (dRows index, or row id when dRows was omitted); −1 pads. */
  idx: Int32Array;
  /** nq×k float32 scores, descending per query; −Infinity pads. */
  score: Float32Array;
}

/** Where the pairing kernels run: {@link TsBackend} (reference) or {@link SidecarBackend} (BLAS/CUDA), or your own. */
export interface PairingBackend {
  /** Reported in the pairing stats (`ts`, `sidecar`, or yours). */
  readonly name: string;
  /** Copy a matrix into the backend; the handle stays valid until `free`. */
  upload(m: Matrix): Promise<MatrixHandle>;
  /** Overwrite some rows of an uploaded matrix (centroid updates). `values` is rows.length × cols. */
  setRows(h: MatrixHandle, rows: Int32Array, values: Float32Array): Promise<void>;
  /** Releases an uploaded matrix; its handle is invalid afterwards. */
  free(h: MatrixHandle): Promise<void>;
  /** C = A[aRows] · B[bRows]ᵀ as a dense |aRows|×|bRows| float32 block (small A only). */
  gemmNT(a: MatrixHandle, aRows: Int32Array | undefined, b: MatrixHandle, bRows?: Int32Array): Promise<Float32Array>;
  /**
   * Nearest-centroid assignment: for each selected row x of X, the top-k centroids c of C by
   * x·c − ½‖c‖² (the same order as ascending ‖x − c‖²). idx are centroid ids.
   */
  assign(x: MatrixHandle, xRows: Int32Array | undefined, c: MatrixHandle, k: number): Promise<TopkResult>;
  /** Streaming top-k by inner product; never materialises the full |Q|×|D| score matrix. */
  topk(req: TopkRequest): Promise<TopkResult>;
  /** Frees every resident matrix (and what the backend owns, e.g. a sidecar it started). */
  close(): Promise<void>;
}
