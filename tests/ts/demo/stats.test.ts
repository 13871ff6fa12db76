/** The demo report's statistics: t quantiles, mean ± 95% CI and the paired difference, checked by hand. */
import { describe, expect, it } from 'vitest';
import { fmtCI, meanCI, pairedDiffCI, tCdf, tQuantile } from '../../../src/demo/report.js';

describe('demo statistics', () => {
  it('t quantiles match the published table (two-sided 95%: p = 0.975)', () => {
    // Student's t table: df 1 → 12.706, 2 → 4.303, 4 → 2.776, 9 → 2.262, 30 → 2.042
    const table: Array<[number, number]> = [
      [1, 12.7062047],
      [2, 4.3026527],
      [3, 3.1824463],
      [4, 2.7764451],
      [9, 2.2621572],
      [30, 2.0422725],
    ];
    for (const [df, t] of table) expect(tQuantile(0.975, df)).toBeCloseTo(t, 6);
    // df = 1 is the Cauchy distribution: P(T <= 1) = 3/4 exactly
    expect(tCdf(1, 1)).toBeCloseTo(0.75, 12);
    expect(tQuantile(0.025, 4)).toBeCloseTo(-2.7764451, 6);
    expect(tQuantile(0.975, 1e6)).toBeCloseTo(1.959966, 4); // → the normal quantile
    expect(() => tQuantile(1, 3)).toThrow(RangeError);
  });

  it('mean ± 95% CI of five seeds, by hand', () => {
    // xs = 0.50 0.52 0.54 0.56 0.58: mean 0.54, squared deviations sum to 0.004, sample sd = sqrt(0.004/4) = 0.0316228,
    // se = sd/√5 = 0.0141421, half = 2.7764451 × 0.0141421 = 0.0392649
    const c = meanCI([0.5, 0.52, 0.54, 0.56, 0.58]);
    expect(c.n).toBe(5);
    expect(c.mean).toBeCloseTo(0.54, 12);
    expect(c.half).toBeCloseTo(0.0392649, 6);
    expect(c.lo).toBeCloseTo(0.5007351, 6);
    expect(c.hi).toBeCloseTo(0.5792649, 6);
    expect(fmtCI(c)).toBe('0.540 ± 0.039 [0.501, 0.579]');
    const one = meanCI([0.7]);
    expect(Number.isNaN(one.half)).toBe(true);
    expect(fmtCI(one)).toBe('0.700 (n = 1, no interval)');
  });

  it('the paired difference pairs by seed and ignores seeds missing from one arm', () => {
    // per-seed differences: 0.10, 0.00, 0.40 (seed 3 only in one arm): mean 0.16667, sd = sqrt(((-.06667)² + (-.16667)² + .23333²)/2)
    // = sqrt(0.0433333) = 0.2081666, se = 0.1201850, half = 4.3026527 × 0.1201850 = 0.5171144
    const d = pairedDiffCI({ 0: 0.5, 1: 0.6, 2: 0.9, 3: 1 }, { 0: 0.4, 1: 0.6, 2: 0.5 });
    expect(d.n).toBe(3);
    expect(d.mean).toBeCloseTo(0.1666667, 6);
    expect(d.half).toBeCloseTo(0.5171144, 6);
    expect(fmtCI(d, 3, true)).toBe('+0.167 ± 0.517 [-0.350, +0.684]');
    // A constant shift is a tight paired difference even when the arms spread widely across seeds.
    const tight = pairedDiffCI({ 0: 0.3, 1: 0.6, 2: 0.9 }, { 0: 0.25, 1: 0.55, 2: 0.85 });
    expect(tight.mean).toBeCloseTo(0.05, 12);
    expect(tight.half).toBeCloseTo(0, 12);
  });
});
