/** Loads the numpy golden files written by tests/fixtures/pairing/make_golden.py. */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { matrix, type Matrix } from '../../../src/pairing/matrix.js';

const dir = join(dirname(fileURLToPath(import.meta.url)), '../../fixtures/pairing');

export interface Golden {
  meta: {
    nU: number;
    nG: number;
    d: number;
    k: number;
    topN: number;
    delta: number;
    pairs_dataset: [number, number, number][];
    'pairs_global-desc': [number, number, number][];
    sklearn_mbkm: { k: number; batch_size: number; inertia_mean: number; inertias: number[] };
  };
  u: Matrix;
  g: Matrix;
  centroids: Matrix;
  arr: Record<string, Float32Array | Float64Array | Int32Array>;
}

let cache: Golden | undefined;

export function loadGolden(): Golden {
  if (cache) return cache;
  const meta = JSON.parse(readFileSync(join(dir, 'golden.json'), 'utf8'));
  const arr: Golden['arr'] = {};
  for (const [name, spec] of Object.entries(meta.arrays as Record<string, { dtype: string; shape: number[] }>)) {
    const buf = readFileSync(join(dir, `${name}.bin`));
    const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
    arr[name] =
      spec.dtype === 'float32'
        ? new Float32Array(ab)
        : spec.dtype === 'float64'
          ? new Float64Array(ab)
          : new Int32Array(ab);
  }
  const m = (name: string): Matrix => {
    const s = meta.arrays[name].shape;
    return matrix(s[0], s[1], arr[name] as Float32Array);
  };
  cache = { meta, u: m('u'), g: m('g'), centroids: m('centroids'), arr };
  return cache;
}
