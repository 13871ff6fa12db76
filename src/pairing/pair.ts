/**
 * Algorithm 1 of the paper, top to bottom, on feature matrices:
 *
 *   F ← L2Norm(F_u ∪ F_g)                        (line 2)
 *   C ← MiniBatchKMeans(F, K)                      (line 3, kmeans.ts)
 *   for each cluster k: i* ← argmax ⟨f_i, c_k⟩     (lines 4–8, medoids.ts) → D_aligned
 *   F_u^rem, F_g^rem ← F_u, F_g minus D_aligned    (line 9)
 *   for each g in F_g^rem: best U items ≥ δ among those still free  (lines 10–14, retrieve.ts) → D_ret
 *
 * Rows of F are U items first (0..nU−1), then G items (nU..nU+nG−1). A medoid that cannot form an
 * aligned quadruple (its completed fields are missing, see `alignable`) is reported in `skipped`
 * and stays in the retrieval pool: it never entered D_aligned.
 */
import { AbortedError, ConfigError } from '../errors.js';
import type { PairingBackend } from './backend/types.js';
import { parsePairingConfig, type PairingConfig, type PairingConfigInput } from './config.js';
import { miniBatchKMeans, type KMeansPhase } from './kmeans.js';
import { centeredCopy, concatRows, l2NormalizeRows, type Matrix } from './matrix.js';
import { clusterDiagnostics, medoids, randomMembers, type ClusterDiagnostics } from './medoids.js';
import { Rng } from '../util/prng.js';
import { retrieve } from './retrieve.js';

/** Which manifest an item is from: understanding (`U`) or generation (`G`). */
export type Side = 'U' | 'G';

/** What Algorithm 1 pairs: the stacked image features of U and G (and which items can be aligned). */
export interface PairingInput {
  /**
   * F_u ∪ F_g: one row per understanding item (manifest order), then one per generation item.
   * Normalised in place (line 2). Build it with `stackFeatures(fu, fg)` or write rows directly.
   */
  features: Matrix;
  /** Number of U rows at the top of `features`. */
  nU: number;
  /** Why item `index` of `side` cannot be an aligned quadruple (e.g. "no caption"), or null if it can. */
  alignable?: (side: Side, index: number) => string | null;
}

/** An aligned pair: a cluster's medoid, completed to a quadruple from its own side's sample (w_p = 1). */
export interface AlignedPair {
  /** Cluster it is the medoid of (−1 for ablation self-pairs). */
  cluster: number;
  /** Which manifest the medoid comes from: understanding (`U`) or generation (`G`). */
  side: Side;
  /** Index within its side's manifest. */
  index: number;
}

/** A medoid that could not become an aligned pair (its sample cannot be completed to a quadruple). */
export interface SkippedMedoid extends AlignedPair {
  /** Why (e.g. "no caption"), as `PairingInput.alignable` said. */
  reason: string;
}

/** A retrieved pair: a G item and one of its top-n U neighbours above the threshold (w_p = √s). */
export interface CrossPair {
  /** Index within U. */
  u: number;
  /** Index within G. */
  g: number;
  /** f64 cosine similarity of the two images. */
  s: number;
}

/** A phase of Algorithm 1 as progress reports it: the k-means phases, then `retrieve` (the top-N search for partners). */
export type PairingPhase = KMeansPhase | 'retrieve';

/** How {@link pairFeatures} runs: where the matrix work happens, how it is stopped, how it reports. */
export interface PairingOptions {
  /** The k-means and top-n search backend (`TsBackend` in-process, or `SidecarBackend` in torch). */
  backend: PairingBackend;
  /** Aborts between phases and batches; the call rejects with `AbortedError`. */
  signal?: AbortSignal;
  /** Progress per phase: `done` of `total` units (k-means iterations, retrieval query batches). */
  onProgress?: (phase: PairingPhase, done: number, total: number) => void;
}

/** Algorithm 1's output: the aligned and retrieved pairs, skipped medoids, cluster and retrieval diagnostics, timings. */
export interface PairingResult {
  /** The config used, defaults filled. */
  config: PairingConfig;
  /** The backend's name. */
  backend: string;
  /** Number of U items. */
  nU: number;
  /** Number of G items. */
  nG: number;
  /** Feature dimension. */
  dim: number;
  /** D_aligned: one pair per cluster medoid that could form a quadruple. */
  aligned: AlignedPair[];
  /** Medoids that could not form an aligned quadruple, and why. */
  skipped: SkippedMedoid[];
  /** D_ret: G items matched to U items by similarity. */
  retrieved: CrossPair[];
  /** k-means diagnostics: cluster sizes, inertia, steps, why it stopped. */
  clusters: ClusterDiagnostics & {
    inertia: number;
    steps: number;
    epochs: number;
    stop: string;
    reassigned: number;
    lloydIters: number;
  };
  /** Retrieval diagnostics: queries, pool size, how many found a candidate or found all taken. */
  retrieval: {
    mode: 'literal' | 'static';
    queries: number;
    pool: number;
    withCandidates: number;
    allTaken: number;
    requeried: number;
    refills: number;
  };
  /** Rows whose norm was off by more than 1e-3 before L2 normalisation. */
  renormalized: number;
  /** Wall time of each phase, ms. */
  timingsMs: {
    upload: number;
    kmeans: number;
    kmeansInit: number;
    kmeansMinibatch: number;
    kmeansLloyd: number;
    kmeansLabels: number;
    medoids: number;
    retrieval: number;
    total: number;
  };
  /** Kept for ablations (ablations.ts): the normalised F and per-cluster labels. */
  features: Matrix;
  /** Cluster of each row of `features`. */
  labels: Int32Array;
}

/** Runs Algorithm 1 (above) on already embedded U and G features. */
export async function pairFeatures(
  input: PairingInput,
  configInput: PairingConfigInput | PairingConfig,
  opts: PairingOptions,
): Promise<PairingResult> {
  const cfg = parsePairingConfig(configInput);
  const { backend } = opts;
  const t0 = performance.now();
  const F = input.features;
  const nU = input.nU;
  const nG = F.rows - nU;
  if (!Number.isInteger(nU) || nU < 0 || nG < 0)
    throw new ConfigError(`nU=${nU} does not fit a ${F.rows}-row feature matrix`);
  if (F.rows === 0) throw new ConfigError('pairing needs at least one U or G item');

  // Line 2: F ← L2Norm(F_u ∪ F_g).
  const renormalized = l2NormalizeRows(F, 'U ∪ G features').renormalized;
  const tU = performance.now();
  const fh = await backend.upload(F);
  const uploadMs = performance.now() - tU;
  try {
    // Line 3: C ← MiniBatchKMeans(F, K), optionally on mean-centred features.
    const tK = performance.now();
    const Fc = cfg.kmeans.center ? centeredCopy(F) : F;
    const fch = cfg.kmeans.center ? await backend.upload(Fc) : fh;
    let km;
    try {
      km = await miniBatchKMeans(backend, Fc, fch, cfg.kmeans, {
        seed: cfg.seed,
        signal: opts.signal,
        onProgress: opts.onProgress,
      });
    } finally {
      if (fch !== fh) await backend.free(fch);
    }
    const kmeansMs = performance.now() - tK;

    // Lines 4–8: one medoid per non-empty cluster → D_aligned.
    const tM = performance.now();
    const medoid = selectAligned(cfg, Fc, km.centers, km.labels);
    const aligned: AlignedPair[] = [];
    const skipped: SkippedMedoid[] = [];
    const inAligned = new Uint8Array(nU + nG);
    for (let k = 0; k < medoid.length; k++) {
      const i = medoid[k];
      if (i < 0) continue; // empty cluster: counted in the diagnostics
      const side: Side = i < nU ? 'U' : 'G';
      const index = side === 'U' ? i : i - nU;
      const why = input.alignable?.(side, index) ?? null;
      if (why !== null) {
        skipped.push({ cluster: k, side, index, reason: why });
        continue;
      }
      aligned.push({ cluster: k, side, index });
      inAligned[i] = 1;
    }
    const medoidsMs = performance.now() - tM;
    if (opts.signal?.aborted) throw new AbortedError('pairing aborted after clustering');

    // Line 9: the remaining sets, in dataset order.
    const uRem = rowsWhere(0, nU, (i) => !inAligned[i]);
    const gRem = rowsWhere(nU, nU + nG, (i) => !inAligned[i]);

    // Lines 10–14: greedy retrieval over exact top-n lists.
    const tR = performance.now();
    const ret = await retrieve(backend, F, fh, uRem, gRem, {
      retrieval: cfg.retrieval,
      topN: cfg.topN,
      threshold: cfg.threshold,
      order: cfg.order,
      pairsPerG: cfg.pairsPerG,
      extra: cfg.extraCandidates,
      signal: opts.signal,
      onProgress: (done, total) => opts.onProgress?.('retrieve', done, total),
    });
    const retrievalMs = performance.now() - tR;

    return {
      config: cfg,
      backend: backend.name,
      nU,
      nG,
      dim: F.cols,
      aligned,
      skipped,
      retrieved: ret.pairs.map((p) => ({ u: p.u, g: p.g - nU, s: p.s })),
      clusters: {
        ...clusterDiagnostics(km.sizes),
        inertia: km.inertia,
        steps: km.steps,
        epochs: km.epochs,
        stop: km.stop,
        reassigned: km.reassigned,
        lloydIters: km.lloydIters,
      },
      retrieval: {
        mode: cfg.retrieval,
        queries: gRem.length,
        pool: uRem.length,
        withCandidates: ret.withCandidates,
        allTaken: ret.allTaken,
        requeried: ret.requeried,
        refills: ret.refills,
      },
      renormalized,
      timingsMs: {
        upload: uploadMs,
        kmeans: kmeansMs,
        kmeansInit: km.timingsMs.init,
        kmeansMinibatch: km.timingsMs.minibatch,
        kmeansLloyd: km.timingsMs.lloyd,
        kmeansLabels: km.timingsMs.labels,
        medoids: medoidsMs,
        retrieval: retrievalMs,
        total: performance.now() - t0,
      },
      features: F,
      labels: km.labels,
    };
  } finally {
    await backend.free(fh);
  }
}

/**
 * Lines 4–8: the row chosen for each cluster (−1: none). The ablations of Table 9 replace the medoid
 * with a random member of the cluster, or with as many rows drawn from U ∪ G regardless of clusters
 * (listed under clusters 0.. in draw order). Their draws use a stream of their own.
 */
function selectAligned(cfg: PairingConfig, F: Matrix, C: Matrix, labels: Int32Array): Int32Array {
  if (cfg.selection === 'medoid') return medoids(F, C, labels).medoid;
  const rng = new Rng(cfg.seed * 7919 + 101);
  const members = randomMembers(labels, C.rows, rng);
  if (cfg.selection === 'random-member') return members;
  const nonEmpty = members.filter((m) => m >= 0).length;
  const out = new Int32Array(C.rows).fill(-1);
  out.set(rng.sampleWithoutReplacement(F.rows, nonEmpty));
  return out;
}

/** F_u ∪ F_g as one matrix (U rows first); both must have the same dimension. */
export function stackFeatures(fu: Matrix, fg: Matrix): Matrix {
  if (fu.cols !== fg.cols)
    throw new ConfigError(
      `U features are ${fu.cols}-d but G features are ${fg.cols}-d: embed both with the same backbone`,
    );
  return concatRows([fu, fg]);
}

function rowsWhere(from: number, to: number, keep: (i: number) => boolean): Int32Array {
  const out: number[] = [];
  for (let i = from; i < to; i++) if (keep(i)) out.push(i);
  return Int32Array.from(out);
}
