/**
 * Exactness against the numpy f64 brute-force reference (tests/fixtures/pairing/make_golden.py):
 * kNN lists, thresholded lists, labels and medoids for fixed centroids, and the greedy retrieval
 * pairs must be identical — indices exactly, scores to 1e-12 — through the reference TS backend and
 * through a deliberately sloppy backend whose f32 scores carry errors close to the proven bound.
 */
import { describe, expect, it } from 'vitest';
import type { PairingBackend } from '../../../src/pairing/backend/types.js';
import { TsBackend } from '../../../src/pairing/backend/ts.js';
import { exactSearch } from '../../../src/pairing/exact.js';
import { exactLabels } from '../../../src/pairing/kmeans.js';
import { concatRows, matrix } from '../../../src/pairing/matrix.js';
import { medoids } from '../../../src/pairing/medoids.js';
import { retrieve } from '../../../src/pairing/retrieve.js';
import { loadGolden } from './_golden.js';
import { SloppyBackend } from './_sloppy.js';

const G = loadGolden();
const X = concatRows([G.u, G.g]);
const nU = G.meta.nU;
const uRows = Int32Array.from({ length: nU }, (_, i) => i);
const gRows = Int32Array.from({ length: G.meta.nG }, (_, j) => nU + j);

function expectLists(
  got: { idx: Int32Array; score: Float64Array; n: number },
  idxRef: Int32Array,
  scoreRef: Float64Array,
  rows: number,
  n: number,
  mapIdx = (i: number) => i,
) {
  expect(got.n).toBe(n);
  let mismatches = 0;
  let maxErr = 0;
  for (let r = 0; r < rows; r++) {
    for (let t = 0; t < n; t++) {
      const want = idxRef[r * n + t];
      const have = got.idx[r * n + t];
      if (want < 0) {
        if (have !== -1) mismatches++;
        continue;
      }
      if (mapIdx(have) !== want) mismatches++;
      maxErr = Math.max(maxErr, Math.abs(got.score[r * n + t] - scoreRef[r * n + t]));
    }
  }
  expect(mismatches).toBe(0);
  expect(maxErr).toBeLessThan(1e-12);
}

const backends: [string, () => PairingBackend][] = [
  ['ts', () => new TsBackend()],
  ['sloppy f32', () => new SloppyBackend(new TsBackend(), 7)],
];

describe.each(backends)('golden exactness (%s backend)', (_name, make) => {
  it('top-10 kNN of every G item over U equals the f64 reference', async () => {
    const be = make();
    const xh = await be.upload(X);
    const lists = await exactSearch(be, { m: X, h: xh, rows: gRows }, { m: X, h: xh, rows: uRows }, { n: G.meta.topN });
    expectLists(lists, G.arr.knn_idx as Int32Array, G.arr.knn_score as Float64Array, G.meta.nG, G.meta.topN);
    await be.close();
  });

  it('thresholded lists (score ≥ δ on the f64 score) equal the reference', async () => {
    const be = make();
    const xh = await be.upload(X);
    const lists = await exactSearch(
      be,
      { m: X, h: xh, rows: gRows },
      { m: X, h: xh, rows: uRows },
      { n: G.meta.topN, threshold: G.meta.delta },
    );
    expectLists(lists, G.arr.thr_idx as Int32Array, G.arr.thr_score as Float64Array, G.meta.nG, G.meta.topN);
    expect(Array.from(lists.len)).toEqual(Array.from(G.arr.thr_len));
    await be.close();
  });

  it('labels and medoids for fixed centroids equal the reference on 100% of points', async () => {
    const be = make();
    const xh = await be.upload(X);
    const C = matrix(G.centroids.rows, G.centroids.cols, new Float32Array(G.centroids.data));
    const ch = await be.upload(C);
    const { labels, sizes } = await exactLabels(be, X, xh, C, ch);
    expect(Array.from(labels)).toEqual(Array.from(G.arr.labels));
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(X.rows);
    const { medoid } = medoids(X, C, labels);
    expect(Array.from(medoid)).toEqual(Array.from(G.arr.medoids));
    await be.close();
  });

  it.each(['dataset', 'global-desc'] as const)(
    'retrieved pairs (%s order) equal the reference exactly',
    async (order) => {
      const be = make();
      const xh = await be.upload(X);
      const aligned = new Set(Array.from(G.arr.medoids as Int32Array).filter((m) => m >= 0));
      const uRem = Int32Array.from(Array.from(uRows).filter((i) => !aligned.has(i)));
      const gRem = Int32Array.from(Array.from(gRows).filter((i) => !aligned.has(i)));
      const res = await retrieve(be, X, xh, uRem, gRem, {
        retrieval: 'static',
        topN: G.meta.topN,
        threshold: G.meta.delta,
        order,
        pairsPerG: 1,
        extra: 4,
      });
      expectLists(res.lists!, G.arr.ret_idx as Int32Array, G.arr.ret_score as Float64Array, gRem.length, G.meta.topN);
      const want = order === 'dataset' ? G.meta.pairs_dataset : G.meta['pairs_global-desc'];
      expect(res.pairs.length).toBe(want.length);
      expect(res.pairs.map((p) => [p.g, p.u])).toEqual(want.map(([g, u]) => [g, u]));
      for (let i = 0; i < want.length; i++) expect(Math.abs(res.pairs[i].s - want[i][2])).toBeLessThan(1e-12);
      await be.close();
    },
  );
});

describe('sloppy backend really is sloppy', () => {
  it('its raw f32 top-10 lists differ from the reference on some rows, so the exact layer is doing work', async () => {
    const be = new SloppyBackend(new TsBackend(), 7);
    const xh = await be.upload(X);
    const raw = await be.topk({ q: xh, qRows: gRows, d: xh, dRows: uRows, k: G.meta.topN });
    const ref = G.arr.knn_idx as Int32Array;
    let rowsDiffer = 0;
    for (let r = 0; r < G.meta.nG; r++) {
      for (let t = 0; t < G.meta.topN; t++) {
        if (raw.idx[r * G.meta.topN + t] !== ref[r * G.meta.topN + t]) {
          rowsDiffer++;
          break;
        }
      }
    }
    expect(rowsDiffer).toBeGreaterThan(0);
    // With no extra candidates the first answer can rarely be proven, so the exact layer must
    // re-query — and still land on the reference.
    const lists = await exactSearch(
      be,
      { m: X, h: xh, rows: gRows },
      { m: X, h: xh, rows: uRows },
      { n: G.meta.topN, extra: 0 },
    );
    expect(lists.requeried).toBeGreaterThan(100);
    expectLists(lists, G.arr.knn_idx as Int32Array, G.arr.knn_score as Float64Array, G.meta.nG, G.meta.topN);
  });
});
