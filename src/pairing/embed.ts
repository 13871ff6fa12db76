/**
 * Embed images with a sidecar backbone, through the on-disk feature cache (featureCache.ts):
 * each image is keyed by the SHA-256 of its bytes, under a directory named by the backbone key
 * (kind + weights identity), so a rerun — or an interrupted run resumed — embeds nothing twice.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ImageSource } from '../data/manifest.js';
import { AbortedError, ConfigError, DataError, SidecarError } from '../errors.js';
import { Tensor, type Sidecar } from '../sidecar/index.js';
import { FeatureCache } from './featureCache.js';
import { matrix, type Matrix } from './matrix.js';

/** Which image encoder to use; see python_sidecar/pairuni_sidecar/features/backbones.py. */
import { BackboneSpec } from '../contract/backbone.js';

export { BackboneSpec };

/** How {@link embedImages} embeds: with which sidecar and backbone, cached where. */
export interface EmbedOptions {
  /** A running sidecar: it loads the backbone and embeds the images. */
  sidecar: Sidecar;
  /** The image encoder; an invalid spec is a ConfigError before the sidecar is asked anything. */
  backbone: BackboneSpec;
  /** Feature cache root: vectors go under a subdirectory named by the backbone's identity key. */
  cacheDir: string;
  /** Images per sidecar call (default 64). */
  batchSize?: number;
  /** New vectors per cache shard (default 4096): the most an interruption can lose. */
  flushEvery?: number;
  /** Checked between batches and passed to the sidecar call: an AbortedError, with the finished vectors saved. */
  signal?: AbortSignal;
  /** Images with a vector so far (cached ones counted at the start) of all `images`; ends with (total, total). */
  onProgress?: (done: number, total: number) => void;
  /** Names image i in errors (manifest file and row). */
  describe?: (i: number) => { file?: string; row?: number; what: string };
}

/** The features {@link embedImages} returns, and how many were computed versus read from the cache. */
export interface EmbedResult {
  /** images.length × `dim` float32, row-major, L2-normalised; row i belongs to `images[i]`. */
  features: Matrix;
  /** The backbone's identity (kind + weights) the sidecar reported: the name of its cache directory. */
  key: string;
  /** Feature width, fixed by the backbone. */
  dim: number;
  /** Images sent to the backbone in this run. */
  embedded: number;
  /** Images whose vector came from the cache. */
  cached: number;
  /** Images whose bytes equal an earlier image in the same list (embedded once). */
  duplicates: number;
}

/** L2-normalised features of `images` (one row each, in order), embedding only those not already in the feature cache. */
export async function embedImages(images: ImageSource[], opts: EmbedOptions): Promise<EmbedResult> {
  const spec = BackboneSpec.safeParse(opts.backbone);
  if (!spec.success)
    throw new ConfigError(
      `invalid backbone: ${spec.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  type Where = { file?: string; row?: number; what: string };
  const describe: (i: number) => Where = opts.describe ?? ((i: number) => ({ what: `image ${i}` }));
  for (const [name, v] of [
    ['batchSize', opts.batchSize],
    ['flushEvery', opts.flushEvery],
  ] as const) {
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= 1))
      throw new ConfigError(`${name} must be an integer >= 1, got ${v}`);
  }
  const info = (await opts.sidecar.features.backbone({ backbone: spec.data })).args;
  const dim = info.dim;
  const cache = new FeatureCache(opts.cacheDir, info.key, dim);

  const bytesOf = (i: number): Uint8Array => {
    const src = images[i];
    if ('bytes' in src) return src.bytes;
    try {
      return readFileSync(src.path);
    } catch (e) {
      const d = describe(i);
      throw new DataError(
        `${d.file ? `${d.file} row ${d.row}: ` : ''}cannot read image ${src.path} (${(e as Error).message})`,
        d.file,
        d.row,
        { cause: e },
      );
    }
  };
  const hashes = images.map((_, i) => createHash('sha256').update(bytesOf(i)).digest('hex'));
  const out = new Float32Array(images.length * dim);
  const found = cache.lookup(hashes, out);

  // One embedding per distinct missing hash; every row with that hash receives it.
  const rowsOf = new Map<string, number[]>();
  let cached = 0;
  hashes.forEach((h, i) => {
    if (found[i]) {
      cached++;
      return;
    }
    const l = rowsOf.get(h);
    if (l) l.push(i);
    else rowsOf.set(h, [i]);
  });
  const todo = [...rowsOf.values()].map((rows) => rows[0]);
  const duplicates = images.length - cached - todo.length;
  const bs = opts.batchSize ?? 64;
  const flushEvery = opts.flushEvery ?? 4096;
  let pendH: string[] = [];
  let pendV: Float32Array[] = [];
  const flush = (): void => {
    if (pendH.length === 0) return;
    const flat = new Float32Array(pendH.length * dim);
    pendV.forEach((v, r) => flat.set(v, r * dim));
    cache.append(pendH, flat);
    pendH = [];
    pendV = [];
  };

  let embedded = 0;
  let covered = cached;
  opts.onProgress?.(covered, images.length);
  try {
    for (let b0 = 0; b0 < todo.length; b0 += bs) {
      if (opts.signal?.aborted)
        throw new AbortedError(`embedding aborted after ${embedded} new images (saved to the cache)`);
      const batch = todo.slice(b0, b0 + bs);
      const parts = batch.map(bytesOf);
      const offsets = new BigInt64Array(parts.length + 1);
      let total = 0;
      parts.forEach((p, j) => {
        total += p.length;
        offsets[j + 1] = BigInt(total);
      });
      const blob = new Uint8Array(total);
      parts.forEach((p, j) => blob.set(p, Number(offsets[j])));
      let res;
      try {
        res = await opts.sidecar.features.embed(
          { backbone: spec.data, batchSize: Math.min(bs, 32) },
          { blob: Tensor.from(blob), offsets: Tensor.from(offsets) },
          { signal: opts.signal },
        );
      } catch (e) {
        if (e instanceof SidecarError && e.code === 'bad_request' && typeof e.detail.index === 'number') {
          const d = describe(batch[e.detail.index]);
          throw new DataError(`${d.file ? `${d.file} row ${d.row}: ` : ''}${d.what}: ${e.message}`, d.file, d.row, {
            cause: e,
          });
        }
        if (e instanceof SidecarError && e.code === 'cancelled')
          throw new AbortedError(`embedding aborted after ${embedded} new images (saved to the cache)`, { cause: e });
        throw e;
      }
      const vecs = res.tensors.features.data as Float32Array;
      batch.forEach((i, j) => {
        const v = vecs.slice(j * dim, (j + 1) * dim);
        const rows = rowsOf.get(hashes[i])!;
        for (const r of rows) out.set(v, r * dim);
        covered += rows.length;
        pendH.push(hashes[i]);
        pendV.push(v);
      });
      embedded += batch.length;
      if (pendH.length >= flushEvery) flush();
      opts.onProgress?.(covered, images.length);
    }
  } finally {
    flush(); // whatever finished is kept, even when we are unwinding an error or an abort
  }
  opts.onProgress?.(images.length, images.length);
  return { features: matrix(images.length, dim, out), key: info.key, dim, embedded, cached, duplicates };
}
