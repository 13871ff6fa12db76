/**
 * Literal Algorithm 1 retrieval (each G item queries the shrinking remaining U set): equal to a
 * brute-force f64 reference on random data with ties, under any list length, in both orders.
 */
import { describe, expect, it } from 'vitest';
import { TsBackend } from '../../../src/pairing/backend/ts.js';
import type { PairingBackend } from '../../../src/pairing/backend/types.js';
import { dot64, l2NormalizeRows, matrix, type Matrix } from '../../../src/pairing/matrix.js';
import { retrieve, type RetrievedPair } from '../../../src/pairing/retrieve.js';
import { Rng } from '../../../src/util/prng.js';
import { SloppyBackend } from './_sloppy.js';

/** The literal reading, computed from the full f64 score table (the thing the SDK never builds). */
function bruteForce(
  X: Matrix,
  uRem: Int32Array,
  gRem: Int32Array,
  o: { threshold?: number; order: 'dataset' | 'global-desc'; pairsPerG: number; negate?: boolean },
): RetrievedPair[] {
  const sign = o.negate ? -1 : 1;
  const ok = (s: number) => o.threshold === undefined || s >= o.threshold;
  const free = new Set(uRem);
  const pairs: RetrievedPair[] = [];
  if (o.order === 'dataset') {
    for (const g of gRem) {
      const c = [...free].map((u) => ({ u, s: sign * dot64(X, g, X, u) })).filter((e) => ok(e.s));
      c.sort((a, b) => b.s - a.s || a.u - b.u);
      for (const e of c.slice(0, o.pairsPerG)) {
        free.delete(e.u);
        pairs.push({ g, u: e.u, s: sign * e.s });
      }
    }
  } else {
    const edges: { qi: number; u: number; s: number }[] = [];
    gRem.forEach((g, qi) => {
      for (const u of uRem) {
        const s = sign * dot64(X, g, X, u);
        if (ok(s)) edges.push({ qi, u, s });
      }
    });
    edges.sort((a, b) => b.s - a.s || a.qi - b.qi || a.u - b.u);
    const taken = new Int32Array(gRem.length);
    for (const e of edges) {
      if (taken[e.qi] >= o.pairsPerG || !free.has(e.u)) continue;
      free.delete(e.u);
      taken[e.qi]++;
      pairs.push({ g: gRem[e.qi], u: e.u, s: sign * e.s });
    }
  }
  return pairs;
}

/**
 * Clustered random unit vectors in d = 6 with exact ties: some U rows and G rows are copies of
 * others (identical f64 scores), and coordinates are coarse so many scores crowd around δ.
 */
function tiedData(seed: number, nU: number, nG: number): Matrix {
  const rng = new Rng(seed);
  const d = 6;
  const centres = Array.from({ length: 4 }, () => Array.from({ length: d }, () => rng.int(4)));
  const X = matrix(nU + nG, d);
  for (let i = 0; i < nU + nG; i++) {
    const copyOf = i % 5 === 4 ? i - 1 - rng.int(3) : -1; // every 5th row duplicates a nearby one
    for (let c = 0; c < d; c++)
      X.data[i * d + c] = copyOf >= 0 ? X.data[copyOf * d + c] : centres[rng.int(4)][c] + rng.int(3) * 0.5;
    if (copyOf < 0 && X.data.subarray(i * d, i * d + d).every((x) => x === 0)) X.data[i * d] = 1;
  }
  l2NormalizeRows(X);
  return X;
}

async function run(
  be: PairingBackend,
  X: Matrix,
  uRem: Int32Array,
  gRem: Int32Array,
  o: Parameters<typeof retrieve>[5],
) {
  const xh = await be.upload(X);
  try {
    return await retrieve(be, X, xh, uRem, gRem, o);
  } finally {
    await be.free(xh);
  }
}

describe("retrieval 'literal' equals the brute-force reference", () => {
  const nU = 90;
  const nG = 110;
  const cases = [1, 2, 3].flatMap((seed) =>
    (['dataset', 'global-desc'] as const).flatMap((order) =>
      [1, 3].flatMap((topN) => [1, 2].filter((p) => p <= topN).map((pairsPerG) => ({ seed, order, topN, pairsPerG }))),
    ),
  );
  it.each(cases)(
    'seed $seed, $order, list length $topN, pairsPerG $pairsPerG',
    async ({ seed, order, topN, pairsPerG }) => {
      const X = tiedData(seed, nU, nG);
      // Leave some rows out (as aligned medoids would be); δ = the median score, a realised (tied) value.
      const uRem = Int32Array.from({ length: nU }, (_, i) => i).filter((i) => i % 7 !== 3);
      const gRem = Int32Array.from({ length: nG }, (_, j) => nU + j).filter((i) => i % 11 !== 5);
      const all = Array.from(gRem)
        .flatMap((g) => Array.from(uRem, (u) => dot64(X, g, X, u)))
        .sort((a, b) => a - b);
      const threshold = all[all.length >> 1];
      const o = { retrieval: 'literal' as const, topN, threshold, order, pairsPerG, extra: 1 };
      const want = bruteForce(X, uRem, gRem, o);
      expect(want.length).toBeGreaterThan(20);
      expect(all.length - new Set(all).size).toBeGreaterThan(1000); // thousands of exact ties
      const got = await run(new TsBackend(), X, uRem, gRem, o);
      expect(got.pairs).toEqual(want);
      expect(got.refills).toBeGreaterThan(0); // short lists run out: the lazy refill is exercised
      // A backend with f32-sized errors in every score and rank gives the same answer.
      const sloppy = await run(new SloppyBackend(new TsBackend(), seed), X, uRem, gRem, o);
      expect(sloppy.pairs).toEqual(want);
    },
  );

  it('negated scores without a threshold (the low-similarity ablation) also match', async () => {
    const X = tiedData(9, 40, 60);
    const uRem = Int32Array.from({ length: 40 }, (_, i) => i);
    const gRem = Int32Array.from({ length: 60 }, (_, j) => 40 + j);
    for (const order of ['dataset', 'global-desc'] as const) {
      const o = { retrieval: 'literal' as const, topN: 2, order, pairsPerG: 1, extra: 0, negate: true };
      const got = await run(new TsBackend(), X, uRem, gRem, o);
      expect(got.pairs).toEqual(bruteForce(X, uRem, gRem, o));
      expect(got.pairs.length).toBe(40); // no threshold: every U item ends up paired
    }
  });
});

describe('literal vs static on a hand-built case', () => {
  // Unit vectors at angles (degrees): U 0, 5, 20; G 0, 4, 2. δ = 0.9, n = 2.
  const deg = (a: number) => [Math.cos((a * Math.PI) / 180), Math.sin((a * Math.PI) / 180)];
  const X = matrix(6, 2, Float32Array.from([0, 5, 20, 0, 4, 2].flatMap(deg)));
  const uRem = Int32Array.from([0, 1, 2]);
  const gRem = Int32Array.from([3, 4, 5]);
  const base = { topN: 2, threshold: 0.9, order: 'dataset' as const, pairsPerG: 1, extra: 4 };
  it('static: G at 2° has top-2 = U at 0° and 5°, both taken by then, so it stays unpaired', async () => {
    const r = await run(new TsBackend(), X, uRem, gRem, { ...base, retrieval: 'static' });
    expect(r.pairs.map((p) => [p.g, p.u])).toEqual([
      [3, 0],
      [4, 1],
    ]);
    expect(r.allTaken).toBe(1);
  });
  it('literal: the same G item queries the remaining set {U at 20°} and pairs with it (cos 18° ≥ δ)', async () => {
    const r = await run(new TsBackend(), X, uRem, gRem, { ...base, retrieval: 'literal' });
    expect(r.pairs.map((p) => [p.g, p.u])).toEqual([
      [3, 0],
      [4, 1],
      [5, 2],
    ]);
    expect(r.pairs[2].s).toBeCloseTo(Math.cos((18 * Math.PI) / 180), 6);
    expect(r.allTaken).toBe(0);
    expect(r.refills).toBe(1);
  });
  it('the ≥ δ boundary holds for the refilled candidate: δ = its f64 score keeps it, one ulp more drops it', async () => {
    const s = dot64(X, 5, X, 2);
    const at = await run(new TsBackend(), X, uRem, gRem, { ...base, threshold: s, retrieval: 'literal' });
    expect(at.pairs.at(-1)).toEqual({ g: 5, u: 2, s });
    const above = await run(new TsBackend(), X, uRem, gRem, { ...base, threshold: s + 2 ** -52, retrieval: 'literal' });
    expect(above.pairs.map((p) => p.g)).toEqual([3, 4]);
  });
});
