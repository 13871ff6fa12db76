/** Algorithm 1 behaviour on small inputs: determinism, empty clusters, threshold boundary, greedy logic. */
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors.js';
import { TsBackend } from '../../../src/pairing/backend/ts.js';
import { parsePairingConfig } from '../../../src/pairing/config.js';
import type { ExactLists } from '../../../src/pairing/exact.js';
import { concatRows, matrix } from '../../../src/pairing/matrix.js';
import { clusterDiagnostics } from '../../../src/pairing/medoids.js';
import { pairFeatures } from '../../../src/pairing/pair.js';
import { Rng } from '../../../src/util/prng.js';
import { greedyMatch, retrieve } from '../../../src/pairing/retrieve.js';
import { loadGolden } from './_golden.js';

const G = loadGolden();
const goldenX = () => concatRows([G.u, G.g]);

describe('Rng', () => {
  it('is reproducible per seed and differs across seeds', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const c = new Rng(43);
    const sa = Array.from({ length: 8 }, () => a.nextU32());
    expect(Array.from({ length: 8 }, () => b.nextU32())).toEqual(sa);
    expect(Array.from({ length: 8 }, () => c.nextU32())).not.toEqual(sa);
  });
  it('int(n) covers [0, n) evenly and next() stays in [0, 1)', () => {
    const r = new Rng(1);
    const counts = new Array(10).fill(0);
    for (let i = 0; i < 100_000; i++) counts[r.int(10)]++;
    for (const c of counts) expect(Math.abs(c - 10_000)).toBeLessThan(500);
    for (let i = 0; i < 10_000; i++) {
      const x = r.next();
      expect(x >= 0 && x < 1).toBe(true);
    }
  });
  it('sampleWithoutReplacement returns distinct values in range', () => {
    const s = new Rng(3).sampleWithoutReplacement(1000, 600);
    expect(new Set(s).size).toBe(600);
    expect(Math.min(...s)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...s)).toBeLessThan(1000);
  });
});

describe('greedyMatch', () => {
  // Three G queries, U ids 10..13. Lists are already sorted by (score desc, id asc).
  const lists: ExactLists = {
    n: 2,
    idx: Int32Array.from([10, 11, 10, 12, 10, 11]),
    score: Float64Array.from([0.9, 0.8, 0.95, 0.7, 0.85, 0.84]),
    len: Int32Array.from([2, 2, 2]),
    requeried: 0,
  };
  const gRem = Int32Array.from([100, 101, 102]);
  it("'dataset' order: earlier G items claim first; a G item whose candidates are taken stays unpaired", () => {
    const r = greedyMatch(lists, gRem, 'dataset', 1);
    expect(r.pairs.map((p) => [p.g, p.u, p.s])).toEqual([
      [100, 10, 0.9],
      [101, 12, 0.7],
      [102, 11, 0.84],
    ]);
    expect(r.allTaken).toBe(0);
  });
  it("'global-desc' order: best edges first", () => {
    const r = greedyMatch(lists, gRem, 'global-desc', 1);
    // 0.95 (101→10), 0.9 (100→10 taken), 0.85 (102→10 taken), 0.84 (102→11), 0.8 (100→11 taken), 0.7 (101 done)
    expect(r.pairs.map((p) => [p.g, p.u])).toEqual([
      [101, 10],
      [102, 11],
    ]);
    expect(r.allTaken).toBe(1); // G 100 had candidates but all were taken
  });
  it('pairsPerG > 1 lets one G item take several U items (literal Algorithm 1 line 12)', () => {
    const r = greedyMatch(lists, gRem, 'dataset', 2);
    expect(r.pairs.map((p) => [p.g, p.u])).toEqual([
      [100, 10],
      [100, 11],
      [101, 12],
    ]);
  });
});

describe('threshold boundary', () => {
  it('a pair whose f64 similarity equals δ is kept; δ one ulp higher drops it', async () => {
    // q = e1; u0·q = 0.5 exactly, u1·q = 0.25 exactly (all values exact in f32).
    const X = matrix(
      3,
      4,
      Float32Array.from([0.5, Math.sqrt(0.75), 0, 0, 0.25, 0, Math.sqrt(1 - 0.0625), 0, 1, 0, 0, 0]),
    );
    const be = new TsBackend();
    const xh = await be.upload(X);
    const uRem = Int32Array.from([0, 1]);
    const gRem = Int32Array.from([2]);
    const base = { retrieval: 'static' as const, topN: 2, order: 'dataset' as const, pairsPerG: 1, extra: 4 };
    const at = await retrieve(be, X, xh, uRem, gRem, { ...base, threshold: 0.5 });
    expect(at.pairs).toEqual([{ g: 2, u: 0, s: 0.5 }]);
    expect(at.lists!.len[0]).toBe(1);
    const above = await retrieve(be, X, xh, uRem, gRem, { ...base, threshold: 0.5 + 2 ** -53 });
    expect(above.pairs).toEqual([]);
    const both = await retrieve(be, X, xh, uRem, gRem, { ...base, threshold: 0.25 });
    expect(Array.from(both.lists!.idx)).toEqual([0, 1]);
  });
  it('equal similarities rank the lower U index first', async () => {
    const X = matrix(3, 2, Float32Array.from([0.6, 0.8, 0.6, 0.8, 1, 0]));
    const be = new TsBackend();
    const xh = await be.upload(X);
    const r = await retrieve(be, X, xh, Int32Array.from([0, 1]), Int32Array.from([2]), {
      retrieval: 'static',
      topN: 2,
      threshold: 0.6,
      order: 'dataset',
      pairsPerG: 1,
      extra: 0,
    });
    expect(Array.from(r.lists!.idx)).toEqual([0, 1]);
    expect(r.pairs[0].u).toBe(0);
  });
});

describe('pairFeatures (Algorithm 1 end to end, TS backend)', () => {
  const cfg = { seed: 5, kmeans: { k: 50, batchSize: 256 }, threshold: G.meta.delta, topN: 10 };

  it('same seed → identical output; another seed → different medoids', async () => {
    const a = await pairFeatures({ features: goldenX(), nU: G.meta.nU }, cfg, { backend: new TsBackend() });
    const b = await pairFeatures({ features: goldenX(), nU: G.meta.nU }, cfg, { backend: new TsBackend() });
    expect(b.aligned).toEqual(a.aligned);
    expect(b.retrieved).toEqual(a.retrieved);
    expect(b.clusters.inertia).toBe(a.clusters.inertia);
    const c = await pairFeatures(
      { features: goldenX(), nU: G.meta.nU },
      { ...cfg, seed: 6 },
      { backend: new TsBackend() },
    );
    expect(c.aligned).not.toEqual(a.aligned);
    // Sanity of the result: every U and G item used at most once, all retrieved s ≥ δ, w = sqrt(s) later.
    const usedU = new Set(a.retrieved.map((p) => p.u));
    expect(usedU.size).toBe(a.retrieved.length);
    for (const p of a.retrieved) expect(p.s).toBeGreaterThanOrEqual(G.meta.delta);
    const alignedU = new Set(a.aligned.filter((x) => x.side === 'U').map((x) => x.index));
    for (const p of a.retrieved) expect(alignedU.has(p.u)).toBe(false);
    expect(a.aligned.length).toBe(a.clusters.nonEmpty);
  });

  it('k-means inertia is within 2% of sklearn MiniBatchKMeans on the same data and hyper-parameters', async () => {
    const inertias: number[] = [];
    for (const seed of [0, 1, 2]) {
      const r = await pairFeatures(
        { features: goldenX(), nU: G.meta.nU },
        { ...cfg, seed },
        { backend: new TsBackend() },
      );
      inertias.push(r.clusters.inertia);
    }
    const mean = inertias.reduce((a, b) => a + b) / inertias.length;
    const ref = G.meta.sklearn_mbkm.inertia_mean;
    expect(Math.abs(mean - ref) / ref).toBeLessThan(0.02);
  });

  it('empty clusters are reported, not assumed away (K=5 over 3 distinct points)', async () => {
    const pts = [
      [1, 0, 0],
      [0, 1, 0],
      [0, 0, 1],
    ];
    const rows: number[] = [];
    for (let i = 0; i < 12; i++) rows.push(...pts[i % 3]);
    const r = await pairFeatures(
      { features: matrix(12, 3, Float32Array.from(rows)), nU: 6 },
      { seed: 1, kmeans: { k: 5, batchSize: 4 }, threshold: 0.5 },
      { backend: new TsBackend() },
    );
    expect(r.clusters.nonEmpty).toBe(3);
    expect(r.clusters.empty).toBe(2);
    expect(r.aligned.length).toBe(3);
    // Each distinct point's medoid is its lowest row: rows 0, 1, 2 (all in U).
    expect(r.aligned.map((a) => `${a.side}${a.index}`).sort()).toEqual(['U0', 'U1', 'U2']);
    // Retrieval: G rows 6..11 are duplicates of U rows 3..5 (similarity 1), each U used once.
    expect(r.retrieved.length).toBe(3);
    for (const p of r.retrieved) expect(p.s).toBe(1);
  });

  it('medoids lacking completed fields are reported and skipped, and stay in the retrieval pool', async () => {
    const X = goldenX();
    const r = await pairFeatures(
      { features: X, nU: G.meta.nU, alignable: (side) => (side === 'G' ? 'no question/choices/answer' : null) },
      cfg,
      { backend: new TsBackend() },
    );
    expect(r.skipped.length).toBeGreaterThan(0);
    expect(r.skipped.every((s) => s.side === 'G' && s.reason === 'no question/choices/answer')).toBe(true);
    expect(r.aligned.every((a) => a.side === 'U')).toBe(true);
    expect(r.aligned.length + r.skipped.length).toBe(r.clusters.nonEmpty);
    expect(r.retrieval.queries).toBe(G.meta.nG); // no G item was removed
  });

  it('rejects bad input with typed errors', async () => {
    await expect(
      pairFeatures({ features: goldenX(), nU: G.meta.nU }, { kmeans: { k: 10_000 } }, { backend: new TsBackend() }),
    ).rejects.toThrow(ConfigError);
    expect(() => parsePairingConfig({ topN: 0 })).toThrow(/topN/);
    const bad = matrix(2, 2, Float32Array.from([1, NaN, 0, 1]));
    await expect(
      pairFeatures({ features: bad, nU: 1 }, { kmeans: { k: 1 } }, { backend: new TsBackend() }),
    ).rejects.toThrow(/row 0 has a non-finite value/);
  });
});

describe('clusterDiagnostics', () => {
  it('counts empty, singleton and largest clusters', () => {
    const d = clusterDiagnostics(Int32Array.from([0, 1, 5, 1, 0, 10]));
    expect(d).toMatchObject({ k: 6, nonEmpty: 4, empty: 2, largest: 10, singletons: 2 });
  });
});
