import { describe, expect, it } from 'vitest';
import { formatStats, type PairStats } from '../../../src/pairing/index.js';

function stats(ablation: string, sims: number[], aligned = 0): PairStats {
  const bins = Array.from({ length: 20 }, (_, b) => ({ from: b / 20, to: (b + 1) / 20, count: 0 }));
  for (const s of sims) bins[Math.min(19, Math.max(0, Math.floor(s * 20)))].count++;
  return {
    ablation,
    counts: { total: sims.length + aligned, aligned, retrieved: sims.length, alignedFromU: aligned, alignedFromG: 0 },
    skippedMedoids: { count: 0, examples: [] },
    similarity: {
      bins,
      mean: sims.reduce((a, b) => a + b, 0) / sims.length,
      min: Math.min(...sims),
      max: Math.max(...sims),
      belowZero: sims.filter((s) => s < 0).length,
    },
    clusters: {
      k: 4,
      nonEmpty: 4,
      empty: 0,
      largest: 9,
      singletons: 1,
      p50: 5,
      inertia: 1.5,
      steps: 7,
      stop: 'no-improvement',
    },
    retrieval: { mode: 'literal', queries: 10, pool: 12, withCandidates: 8, allTaken: 1, refills: 3 },
  } as unknown as PairStats;
}

describe('formatStats', () => {
  it('PairUG: retrieved pairs and their similarity histogram', () => {
    const out = formatStats(stats('none', [0.61, 0.62, 0.93], 2)).split('\n');
    expect(out[0]).toBe('PairUG: 5 pairs = 2 aligned (2 from U, 0 from G) + 3 retrieved');
    expect(out[1]).toMatch(/^clusters: K=4/);
    expect(out).toContain('retrieved similarity (mean 0.720, min 0.610, max 0.930):');
    expect(out.slice(4).map((l) => l.trim().split(/\s+/).slice(0, 2))).toEqual([
      ['0.60–0.65', '2'],
      ['0.90–0.95', '1'],
    ]);
  });

  it('an ablation is named as one, its cluster/retrieval lines attributed to the PairUG run, negatives shown apart', () => {
    const out = formatStats(stats('random', [-0.2, -0.02, 0.02, 0.6])).split('\n');
    expect(out[0]).toBe("Ablation 'random': 4 pairs = 0 aligned (0 from U, 0 from G) + 4 cross");
    expect(out[1]).toMatch(/^PairUG run \(sets the budget\) clusters: K=4/);
    expect(out[2]).toBe(
      'PairUG run (sets the budget) retrieval (literal): 10 G queries over 12 U items, 8 with a candidate ≥ δ, 1 found all candidates taken, 3 lists refilled',
    );
    expect(out).toContain('pair similarity (mean 0.100, min -0.200, max 0.600):');
    expect(
      out.slice(4).map((l) =>
        l
          .trim()
          .split(/\s+/)
          .slice(0, l.includes('<') ? 3 : 2)
          .join(' '),
      ),
    ).toEqual(['< 0.00 2', '0.00–0.05 1', '0.60–0.65 1']);
  });
});
