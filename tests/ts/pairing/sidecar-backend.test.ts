/**
 * The sidecar (PyTorch) backend gives the same exact answers as the f64 reference: kNN lists,
 * retrieved pairs, labels and medoids on the golden fixtures; and a full pairFeatures run is
 * reproducible with the same seed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SidecarBackend } from '../../../src/pairing/backend/sidecar.js';
import { TsBackend } from '../../../src/pairing/backend/ts.js';
import { exactSearch } from '../../../src/pairing/exact.js';
import { exactLabels } from '../../../src/pairing/kmeans.js';
import { concatRows, matrix } from '../../../src/pairing/matrix.js';
import { medoids } from '../../../src/pairing/medoids.js';
import { pairFeatures } from '../../../src/pairing/pair.js';
import { retrieve } from '../../../src/pairing/retrieve.js';
import { loadGolden } from './_golden.js';

const G = loadGolden();
const X = concatRows([G.u, G.g]);
const nU = G.meta.nU;
let be: SidecarBackend;

beforeAll(async () => {
  be = await SidecarBackend.spawn({ device: 'cpu' });
});
afterAll(async () => {
  await be?.close();
});

describe('sidecar backend on the golden fixtures', () => {
  it('kNN lists equal the f64 reference', async () => {
    const xh = await be.upload(X);
    const uRows = Int32Array.from({ length: nU }, (_, i) => i);
    const gRows = Int32Array.from({ length: G.meta.nG }, (_, j) => nU + j);
    const lists = await exactSearch(be, { m: X, h: xh, rows: gRows }, { m: X, h: xh, rows: uRows }, { n: G.meta.topN });
    expect(Array.from(lists.idx)).toEqual(Array.from(G.arr.knn_idx));
    const ref = G.arr.knn_score as Float64Array;
    let maxErr = 0;
    for (let i = 0; i < ref.length; i++) maxErr = Math.max(maxErr, Math.abs(lists.score[i] - ref[i]));
    expect(maxErr).toBeLessThan(1e-12);
    await be.free(xh);
  });

  it('labels and medoids for fixed centroids equal the reference (100%)', async () => {
    const xh = await be.upload(X);
    const C = matrix(G.centroids.rows, G.centroids.cols, new Float32Array(G.centroids.data));
    const ch = await be.upload(C);
    const { labels } = await exactLabels(be, X, xh, C, ch);
    expect(Array.from(labels)).toEqual(Array.from(G.arr.labels));
    expect(Array.from(medoids(X, C, labels).medoid)).toEqual(Array.from(G.arr.medoids));
    await be.free(xh);
    await be.free(ch);
  });

  it('retrieved pairs equal the reference in both orders', async () => {
    const xh = await be.upload(X);
    const aligned = new Set(Array.from(G.arr.medoids as Int32Array));
    const uRem = Int32Array.from({ length: nU }, (_, i) => i).filter((i) => !aligned.has(i));
    const gRem = Int32Array.from({ length: G.meta.nG }, (_, j) => nU + j).filter((i) => !aligned.has(i));
    for (const order of ['dataset', 'global-desc'] as const) {
      const r = await retrieve(be, X, xh, uRem, gRem, {
        retrieval: 'static',
        topN: G.meta.topN,
        threshold: G.meta.delta,
        order,
        pairsPerG: 1,
        extra: 4,
      });
      const want = order === 'dataset' ? G.meta.pairs_dataset : G.meta['pairs_global-desc'];
      expect(r.pairs.map((p) => [p.g, p.u])).toEqual(want.map(([g, u]) => [g, u]));
      // The literal reading (shrinking U set, lists refilled on demand) equals the TS reference backend's.
      const opts = { retrieval: 'literal' as const, topN: 2, threshold: G.meta.delta, order, pairsPerG: 1, extra: 4 };
      const lit = await retrieve(be, X, xh, uRem, gRem, opts);
      const ts = new TsBackend();
      const ref = await retrieve(ts, X, await ts.upload(X), uRem, gRem, opts);
      expect(lit.refills).toBeGreaterThan(0);
      expect(lit.pairs).toEqual(ref.pairs);
    }
    await be.free(xh);
  });

  it('pairFeatures with the same seed is reproducible, and inertia is within 2% of sklearn', async () => {
    const cfg = { seed: 3, kmeans: { k: 50, batchSize: 256 }, threshold: G.meta.delta };
    const a = await pairFeatures({ features: concatRows([G.u, G.g]), nU }, cfg, { backend: be });
    const b = await pairFeatures({ features: concatRows([G.u, G.g]), nU }, cfg, { backend: be });
    expect(b.aligned).toEqual(a.aligned);
    expect(b.retrieved).toEqual(a.retrieved);
    expect(a.backend).toBe('sidecar');
    const ref = G.meta.sklearn_mbkm.inertia_mean;
    expect(Math.abs(a.clusters.inertia - ref) / ref).toBeLessThan(0.02);
  });
});
