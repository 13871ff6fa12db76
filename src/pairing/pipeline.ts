/**
 * The SDK entry points behind `pairuni embed` and `pairuni pair`:
 *   embedManifests  U/G manifests → cached features (resumable: the cache keeps finished batches);
 *   buildPairUG     manifests → features → Algorithm 1 → (ablation) → PairUG files + stats.
 * Pairing is deterministic given the seed, the inputs (in order) and the backend, so an interrupted
 * `pair` is resumed by running it again: embedding restarts from the cache, pairing recomputes.
 */
import { join, resolve } from 'node:path';
import { readGeneration, readUnderstanding, type ColumnMap, type Manifest } from '../data/manifest.js';
import type { GenerationRecord, PairRecord, UnderstandingRecord } from '../data/schemas.js';
import { Sidecar } from '../sidecar/index.js';
import { pairSet } from './ablations.js';
import { SidecarBackend } from './backend/sidecar.js';
import { TsBackend } from './backend/ts.js';
import type { PairingBackend } from './backend/types.js';
import { parsePairingConfig, type PairingConfigInput } from './config.js';
import { embedImages, type BackboneSpec } from './embed.js';
import { concatRows } from './matrix.js';
import { alignableFor, formatStats, pairStats, toPairRecords, writePairUG, type PairStats } from './output.js';
import { pairFeatures, type PairingPhase } from './pair.js';

export type Stage = 'read' | 'embed-U' | 'embed-G' | PairingPhase | 'write';

export interface EmbedManifestsOptions {
  understanding: string;
  generation: string;
  backbone: BackboneSpec;
  /** Feature cache root (default ./.pairuni/features). */
  cacheDir?: string;
  columns?: { u?: ColumnMap; g?: ColumnMap };
  /** Reuse a running sidecar; otherwise one is started and stopped. */
  sidecar?: Sidecar;
  batchSize?: number;
  signal?: AbortSignal;
  onProgress?: (stage: Stage, done: number, total: number) => void;
}

export interface EmbeddedManifests {
  u: Manifest<UnderstandingRecord>;
  g: Manifest<GenerationRecord>;
  fu: import('./matrix.js').Matrix;
  fg: import('./matrix.js').Matrix;
  key: string;
  dim: number;
  embedded: number;
  cached: number;
}

async function withSidecar<T>(given: Sidecar | undefined, fn: (sc: Sidecar) => Promise<T>): Promise<T> {
  if (given) return fn(given);
  const sc = await Sidecar.spawn();
  try {
    return await fn(sc);
  } finally {
    await sc.close();
  }
}

/** The sidecar converts Parquet manifests to Arrow IPC (arrow-js cannot read Parquet). */
function parquetVia(sc: Sidecar, tmpDir: string): (p: string) => Promise<string> {
  return async (p) => {
    const out = join(tmpDir, `${p.replace(/[^\w.-]+/g, '_')}.arrow`);
    await sc.manifest.parquetToArrow({ path: resolve(p), out });
    return out;
  };
}

export async function embedManifests(opts: EmbedManifestsOptions): Promise<EmbeddedManifests> {
  const cacheDir = resolve(opts.cacheDir ?? '.pairuni/features');
  return withSidecar(opts.sidecar, async (sc) => {
    const { mkdirSync } = await import('node:fs');
    const tmp = join(cacheDir, 'manifests');
    mkdirSync(tmp, { recursive: true });
    const parquetToArrow = parquetVia(sc, tmp);
    opts.onProgress?.('read', 0, 2);
    const u = await readUnderstanding(opts.understanding, { columns: opts.columns?.u, parquetToArrow });
    opts.onProgress?.('read', 1, 2);
    const g = await readGeneration(opts.generation, { columns: opts.columns?.g, parquetToArrow });
    opts.onProgress?.('read', 2, 2);
    const common = { sidecar: sc, backbone: opts.backbone, cacheDir, batchSize: opts.batchSize, signal: opts.signal };
    const eu = await embedImages(
      u.items.map((it) => it.image),
      { ...common, onProgress: (d, t) => opts.onProgress?.('embed-U', d, t), describe: (i) => ({ file: u.file, row: u.items[i].row, what: `image of '${u.items[i].record.id}'` }) },
    );
    const eg = await embedImages(
      g.items.map((it) => it.image),
      { ...common, onProgress: (d, t) => opts.onProgress?.('embed-G', d, t), describe: (i) => ({ file: g.file, row: g.items[i].row, what: `image of '${g.items[i].record.id}'` }) },
    );
    return { u, g, fu: eu.features, fg: eg.features, key: eu.key, dim: eu.dim, embedded: eu.embedded + eg.embedded, cached: eu.cached + eg.cached };
  });
}

export interface BuildPairUGOptions extends EmbedManifestsOptions {
  /** Output directory for pairs.arrow, pairs.jsonl and stats.json. */
  out: string;
  config?: PairingConfigInput;
  /** 'sidecar' (default: BLAS/CUDA kernels in the sidecar) or 'ts' (reference, small inputs only). */
  backend?: 'sidecar' | 'ts' | PairingBackend;
}

export interface PairUGResult {
  records: PairRecord[];
  stats: PairStats;
  files: { arrow: string; jsonl: string; stats: string };
  summary: string;
}

export async function buildPairUG(opts: BuildPairUGOptions): Promise<PairUGResult> {
  const cfg = parsePairingConfig(opts.config ?? {});
  return withSidecar(opts.sidecar, async (sc) => {
    const emb = await embedManifests({ ...opts, sidecar: sc });
    const backend: PairingBackend =
      typeof opts.backend === 'object' ? opts.backend : opts.backend === 'ts' ? new TsBackend() : new SidecarBackend(sc);
    const inputs = { u: emb.u, g: emb.g };
    const alignable = alignableFor(inputs);
    const res = await pairFeatures({ features: concatRows([emb.fu, emb.fg]), nU: emb.u.items.length, alignable }, cfg, {
      backend,
      signal: opts.signal,
      onProgress: (phase, d, t) => opts.onProgress?.(phase, d, t),
    });
    const pairs = await pairSet(cfg.ablation, res, { backend, alignable, signal: opts.signal });
    const out = resolve(opts.out);
    opts.onProgress?.('write', 0, 1);
    const records = toPairRecords(pairs, inputs, out);
    const stats = pairStats(records, res, inputs, { features: { backbone: emb.key, dim: emb.dim, embedded: emb.embedded, cached: emb.cached } });
    const files = writePairUG(out, records, stats);
    opts.onProgress?.('write', 1, 1);
    if (typeof opts.backend !== 'object') await backend.close();
    return { records, stats, files, summary: formatStats(stats) };
  });
}
