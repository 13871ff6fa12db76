/**
 * The SDK entry points behind `pairuni embed` and `pairuni pair`:
 *   embedManifests  U/G manifests → cached features (resumable: the cache keeps finished batches);
 *   buildPairUG     manifests → features → Algorithm 1 → (ablation) → PairUG files + stats.
 * Pairing is deterministic given the seed, the inputs (in order) and the backend, so an interrupted
 * `pair` is resumed by running it again: embedding restarts from the cache, pairing recomputes.
 * Arguments are refused before any work: the output and cache directories are checked, and the
 * manifests read (an empty one is a DataError), before a sidecar is started or anything embedded.
 */
import { accessSync, constants as fsConstants, mkdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { readGeneration, readUnderstanding, type ColumnMap, type Manifest } from '../data/manifest.js';
import type { GenerationRecord, PairRecord, UnderstandingRecord } from '../data/schemas.js';
import { ConfigError } from '../errors.js';
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
import { createLogger, type Logger, type LogOptions } from '../util/log.js';

/**
 * The stage an `onProgress` call reports: `read` (the two manifests), `embed-U` / `embed-G` (images),
 * the pairing phases of Algorithm 1 (k-means `init`, `minibatch`, `lloyd`, `labels`, then `retrieve`;
 * `buildPairUG` only), and `write` (the PairUG files).
 */
export type Stage = 'read' | 'embed-U' | 'embed-G' | PairingPhase | 'write';

/** `logger` / `logLevel`: the lines of the sidecar these start (not of a `sidecar` passed in: it has its own). */
export interface EmbedManifestsOptions extends LogOptions {
  /** Path of the understanding set U: JSONL, Arrow IPC, a `save_to_disk` directory or Parquet; relative to the cwd. */
  understanding: string;
  /** Path of the generation set G, in any of the same formats. */
  generation: string;
  /** The image encoder whose features are cached and paired; its identity names the cache directory. */
  backbone: BackboneSpec;
  /** Feature cache root (default ./.pairuni/features). */
  cacheDir?: string;
  /** Record field → column name, per manifest, for files whose columns are named otherwise. */
  columns?: { u?: ColumnMap; g?: ColumnMap };
  /** Reuse a running sidecar; otherwise one is started and stopped. */
  sidecar?: Sidecar;
  /** Images per embedding call to the sidecar (default 64). */
  batchSize?: number;
  /** Stops embedding (and pairing) with an AbortedError; vectors already embedded stay in the cache. */
  signal?: AbortSignal;
  /**
   * Called as work advances: `read` counts manifests (of 2), the embed stages count images with a
   * vector (cached ones at once) of the set's size; `buildPairUG` adds the pairing phases and `write`.
   */
  onProgress?: (stage: Stage, done: number, total: number) => void;
}

/** What {@link embedManifests} read and embedded: both manifests and one feature row per item. */
export interface EmbeddedManifests {
  /** The understanding set as read: records in file order, with their images and rows. */
  u: Manifest<UnderstandingRecord>;
  /** The generation set as read. */
  g: Manifest<GenerationRecord>;
  /** Features of U's images: |U| × `dim` float32, row-major, L2-normalised; row i is `u.items[i]`. */
  fu: import('./matrix.js').Matrix;
  /** Features of G's images: |G| × `dim`, laid out as `fu`. */
  fg: import('./matrix.js').Matrix;
  /** The backbone's identity (kind + weights) the sidecar reported; names the cache directory and goes into stats.json. */
  key: string;
  /** Feature width: the columns of `fu` and `fg`. */
  dim: number;
  /** Images of U and G sent to the backbone in this call (0 when everything came from the cache). */
  embedded: number;
  /** Images of U and G whose vector came from the cache. */
  cached: number;
}

/**
 * The given sidecar, or one started on first use and stopped by `close`: manifests that need no
 * sidecar (everything but Parquet) are read, and every argument checked, before Python starts.
 */
class LazySidecar {
  private starting?: Promise<Sidecar>;
  constructor(
    private readonly given: Sidecar | undefined,
    private readonly logger: Logger,
  ) {}

  get(): Promise<Sidecar> {
    if (this.given) return Promise.resolve(this.given);
    // The logger is already filtered at the caller's level: let every line through to it.
    return (this.starting ??= Sidecar.spawn({ logger: this.logger, logLevel: 'debug' }));
  }

  async close(): Promise<void> {
    if (this.given || !this.starting) return;
    const sc = await this.starting.catch(() => undefined);
    await sc?.close();
  }
}

/** The sidecar converts Parquet manifests to Arrow IPC (arrow-js cannot read Parquet). */
function parquetVia(sidecar: LazySidecar, tmpDir: string): (p: string) => Promise<string> {
  return async (p) => {
    mkdirSync(tmpDir, { recursive: true });
    const out = join(tmpDir, `${p.replace(/[^\w.-]+/g, '_')}.arrow`);
    await (await sidecar.get()).manifest.parquetToArrow({ path: resolve(p), out });
    return out;
  };
}

/**
 * Throws a ConfigError naming `dir` unless it is, or can be created as, a writable directory.
 * Checked before any embedding or pairing work, so a bad `--out` or cache dir costs nothing;
 * creates nothing. `what` names the role in the message ('output directory', ...).
 */
export function checkOutputDir(dir: string, what = 'output directory'): void {
  const target = resolve(dir);
  const fail = (why: string, cause?: unknown): never => {
    throw new ConfigError(`${what} ${target} is not usable: ${why}`, { cause });
  };
  // The nearest existing path at or above the target: it must be a directory we can write into.
  let p = target;
  for (;;) {
    let st;
    try {
      st = statSync(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') fail(`cannot stat ${p} (${(e as Error).message})`, e);
      const parent = dirname(p); // ENOTDIR: a file somewhere above, named by a later round
      if (parent === p) fail(`${p} does not exist`);
      p = parent;
      continue;
    }
    if (!st.isDirectory()) fail(p === target ? 'it exists and is not a directory' : `${p} is a file, not a directory`);
    break;
  }
  try {
    accessSync(p, fsConstants.W_OK | fsConstants.X_OK);
  } catch (e) {
    fail(`${p} is not writable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, e);
  }
}

async function readInputs(
  opts: EmbedManifestsOptions,
  cacheDir: string,
  sidecar: LazySidecar,
): Promise<{ u: Manifest<UnderstandingRecord>; g: Manifest<GenerationRecord> }> {
  const parquetToArrow = parquetVia(sidecar, join(cacheDir, 'manifests'));
  opts.onProgress?.('read', 0, 2);
  const u = await readUnderstanding(resolve(opts.understanding), { columns: opts.columns?.u, parquetToArrow });
  opts.onProgress?.('read', 1, 2);
  const g = await readGeneration(resolve(opts.generation), { columns: opts.columns?.g, parquetToArrow });
  opts.onProgress?.('read', 2, 2);
  return { u, g };
}

async function embedInputs(
  opts: EmbedManifestsOptions,
  inputs: { u: Manifest<UnderstandingRecord>; g: Manifest<GenerationRecord> },
  cacheDir: string,
  sc: Sidecar,
): Promise<EmbeddedManifests> {
  const { u, g } = inputs;
  const common = { sidecar: sc, backbone: opts.backbone, cacheDir, batchSize: opts.batchSize, signal: opts.signal };
  const eu = await embedImages(
    u.items.map((it) => it.image),
    {
      ...common,
      onProgress: (d, t) => opts.onProgress?.('embed-U', d, t),
      describe: (i) => ({ file: u.file, row: u.items[i].row, what: `image of '${u.items[i].record.id}'` }),
    },
  );
  const eg = await embedImages(
    g.items.map((it) => it.image),
    {
      ...common,
      onProgress: (d, t) => opts.onProgress?.('embed-G', d, t),
      describe: (i) => ({ file: g.file, row: g.items[i].row, what: `image of '${g.items[i].record.id}'` }),
    },
  );
  return {
    u,
    g,
    fu: eu.features,
    fg: eg.features,
    key: eu.key,
    dim: eu.dim,
    embedded: eu.embedded + eg.embedded,
    cached: eu.cached + eg.cached,
  };
}

function cacheDirOf(opts: EmbedManifestsOptions): string {
  const cacheDir = resolve(opts.cacheDir ?? '.pairuni/features');
  checkOutputDir(cacheDir, 'feature cache directory');
  return cacheDir;
}

/** `pairuni embed`: reads the U and G manifests and embeds their images into the feature cache. */
export async function embedManifests(opts: EmbedManifestsOptions): Promise<EmbeddedManifests> {
  const cacheDir = cacheDirOf(opts);
  const sidecar = new LazySidecar(opts.sidecar, createLogger(opts));
  try {
    const inputs = await readInputs(opts, cacheDir, sidecar);
    return await embedInputs(opts, inputs, cacheDir, await sidecar.get());
  } finally {
    await sidecar.close();
  }
}

export interface BuildPairUGOptions extends EmbedManifestsOptions {
  /** Output directory for pairs.arrow, pairs.jsonl and stats.json. */
  out: string;
  /** Algorithm 1's settings (k, seed, retrieval, threshold, ablation, ...); omitted fields take their defaults, invalid ones are a ConfigError before any work. */
  config?: PairingConfigInput;
  /** 'sidecar' (default: BLAS/CUDA kernels in the sidecar) or 'ts' (reference, small inputs only). */
  backend?: 'sidecar' | 'ts' | PairingBackend;
}

/** What {@link buildPairUG} wrote: the pair records, their statistics, the file paths, and a printable summary. */
export interface PairUGResult {
  /** The pairs written, in file order. */
  records: PairRecord[];
  /** Counts, similarity histogram, diagnostics and timings (stats.json). */
  stats: PairStats;
  /** Paths of pairs.arrow, pairs.jsonl and stats.json. */
  files: { arrow: string; jsonl: string; stats: string };
  /** The human-readable summary `pairuni pair` prints. */
  summary: string;
}

/** `pairuni pair`: manifests → features → Algorithm 1 → (ablation) → pairs.arrow, pairs.jsonl and stats.json in `opts.out`. */
export async function buildPairUG(opts: BuildPairUGOptions): Promise<PairUGResult> {
  // Everything that can be refused is refused before any embedding or pairing work.
  const cfg = parsePairingConfig(opts.config ?? {});
  checkOutputDir(opts.out);
  const cacheDir = cacheDirOf(opts);
  const sidecar = new LazySidecar(opts.sidecar, createLogger(opts));
  try {
    const inputs = await readInputs(opts, cacheDir, sidecar);
    const sc = await sidecar.get();
    const emb = await embedInputs(opts, inputs, cacheDir, sc);
    const backend: PairingBackend =
      typeof opts.backend === 'object'
        ? opts.backend
        : opts.backend === 'ts'
          ? new TsBackend()
          : new SidecarBackend(sc);
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
    const stats = pairStats(records, res, inputs, {
      features: { backbone: emb.key, dim: emb.dim, embedded: emb.embedded, cached: emb.cached },
    });
    const files = writePairUG(out, records, stats);
    opts.onProgress?.('write', 1, 1);
    if (typeof opts.backend !== 'object') await backend.close();
    return { records, stats, files, summary: formatStats(stats) };
  } finally {
    await sidecar.close();
  }
}
