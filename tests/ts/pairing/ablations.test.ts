/** Ablation options: pair weights of random/unpaired sets, PairUG subsets, random aligned selection (Table 9). */
import { describe, expect, it } from 'vitest';
import { pairSet } from '../../../src/pairing/ablations.js';
import { TsBackend } from '../../../src/pairing/backend/ts.js';
import type { PairingConfigInput } from '../../../src/pairing/config.js';
import { matrix } from '../../../src/pairing/matrix.js';
import { randomMembers } from '../../../src/pairing/medoids.js';
import { pairFeatures } from '../../../src/pairing/pair.js';
import { Rng } from '../../../src/util/prng.js';

const nU = 60;
const nG = 80;

/** Six loose clusters in 8-d, U rows first. */
function data(seed: number) {
  const rng = new Rng(seed);
  const X = matrix(nU + nG, 8);
  for (let i = 0; i < X.rows; i++) {
    const c = rng.int(6);
    for (let j = 0; j < 8; j++) X.data[i * 8 + j] = (j === c ? 3 : 0) + rng.next();
  }
  return X;
}

const base: PairingConfigInput = { seed: 4, kmeans: { k: 6, batchSize: 32 }, threshold: 0.8, topN: 3 };
const run = (cfg: PairingConfigInput = {}) =>
  pairFeatures({ features: data(1), nU }, { ...base, ...cfg }, { backend: new TsBackend() });
const ctx = { backend: new TsBackend() };

describe('pair weights written for each set', () => {
  it('PairUG: aligned w = 1, retrieved w = √s (eq. 3)', async () => {
    const set = await pairSet('none', await run(), ctx);
    expect(set.some((p) => p.type === 'retrieved')).toBe(true);
    for (const p of set) expect(p.w).toBe(p.type === 'aligned' ? 1 : Math.sqrt(p.s));
  });
  it.each(['random', 'unpaired'] as const)(
    "'%s' trains unweighted by default (w = 1); 'sqrt-similarity' gives √max(s, 0)",
    async (kind) => {
      const paper = await pairSet(kind, await run(), ctx);
      expect(paper.length).toBeGreaterThan(10);
      expect(paper.every((p) => p.w === 1)).toBe(true);
      expect(paper.some((p) => p.s < 0.99)).toBe(true); // not all similarities are ~1: the default really ignores s
      const sim = await pairSet(kind, await run({ ablationWeight: 'sqrt-similarity' }), ctx);
      expect(sim.map((p) => [p.u, p.g, p.s])).toEqual(paper.map((p) => [p.u, p.g, p.s]));
      for (const p of sim) expect(p.w).toBe(Math.sqrt(Math.max(0, p.s)));
    },
  );
  it("'low-sim' keeps the similarity weight", async () => {
    const low = await pairSet('low-sim', await run(), ctx);
    for (const p of low) expect(p.w).toBe(Math.sqrt(Math.max(0, p.s)));
  });
});

describe('subset (Table 5, PairUG 7.5K)', () => {
  it('keeps a seeded uniform sample of the given size, in set order; a size ≥ the set keeps all', async () => {
    const full = await pairSet('none', await run(), ctx);
    const key = (p: { u: { side: string; index: number }; g: { side: string; index: number } }) =>
      `${p.u.side}${p.u.index}-${p.g.side}${p.g.index}`;
    const pos = new Map(full.map((p, i) => [key(p), i]));
    const a = await pairSet('none', await run({ subset: 7 }), ctx);
    expect(a.length).toBe(7);
    const idx = a.map((p) => pos.get(key(p))!);
    expect(idx.every((i) => i !== undefined)).toBe(true);
    expect([...idx].sort((x, y) => x - y)).toEqual(idx); // set order kept
    expect(await pairSet('none', await run({ subset: 7 }), ctx)).toEqual(a);
    const other = await pairSet('none', await run({ subset: 7, seed: 5 }), ctx);
    expect(other.map(key)).not.toEqual(a.map(key));
    expect(await pairSet('none', await run({ subset: full.length + 5 }), ctx)).toEqual(full);
  });
});

describe("selection (Table 9: 'No K-means (Random)')", () => {
  it('randomMembers draws each member of a cluster with equal probability', () => {
    const labels = Int32Array.from([0, 1, 0, 0, 2, 1, 0]); // cluster 0 = rows 0,2,3,6; cluster 1 = rows 1,5; cluster 2 = row 4; cluster 3 empty
    const counts = new Map<number, number>();
    const rng = new Rng(11);
    const draws = 8000;
    const others = new Set<string>();
    for (let t = 0; t < draws; t++) {
      const m = randomMembers(labels, 4, rng);
      others.add(`${m[1]} ${m[2]} ${m[3]}`);
      counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
    }
    expect([...others].sort()).toEqual(['1 4 -1', '5 4 -1']);
    expect([...counts.keys()].sort()).toEqual([0, 2, 3, 6]);
    for (const c of counts.values()) expect(Math.abs(c - draws / 4)).toBeLessThan(150); // ±5σ of a binomial(8000, 1/4)
  });

  it("'random-member' aligns one member of each non-empty cluster (not the medoid); 'random' ignores clusters", async () => {
    const med = await run();
    const rm = await run({ selection: 'random-member' });
    const row = (a: { side: string; index: number }) => (a.side === 'U' ? a.index : nU + a.index);
    // Same clustering (selection runs after it), one aligned item per non-empty cluster, each inside its cluster.
    expect(Array.from(rm.labels)).toEqual(Array.from(med.labels));
    expect(rm.aligned.length).toBe(med.clusters.nonEmpty);
    for (const a of rm.aligned) expect(rm.labels[row(a)]).toBe(a.cluster);
    expect(rm.aligned.map(row)).not.toEqual(med.aligned.map(row));
    expect((await run({ selection: 'random-member' })).aligned).toEqual(rm.aligned);
    const rnd = await run({ selection: 'random' });
    expect(rnd.aligned.length).toBe(med.clusters.nonEmpty);
    expect(new Set(rnd.aligned.map(row)).size).toBe(rnd.aligned.length);
    // Aligned items leave the retrieval pools in every mode.
    const used = new Set(rnd.aligned.map(row));
    for (const p of rnd.retrieved) {
      expect(used.has(p.u)).toBe(false);
      expect(used.has(nU + p.g)).toBe(false);
    }
  });
});
