import { describe, expect, it } from 'vitest';
import {
  AdvantageError,
  clippedSurrogate,
  formatOk,
  groupNormalize,
  lossNorm,
  pairWeight,
  parseAnswerLetter,
  renderQuestion,
  sideAdvantages,
  trajCoefficients,
  undReward,
} from '../../../src/grpo/index.js';

const close = (a: ArrayLike<number>, b: number[], eps = 1e-6) => {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < b.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThan(eps);
};

describe('eq. 1: group normalisation', () => {
  it('matches hand-computed values (unbiased σ, eps 1e-4)', () => {
    // r = [1, 0, 0, 1]: mean 0.5, unbiased σ = sqrt(4·0.25/3) = 0.57735
    const s = Math.sqrt(1 / 3);
    close(groupNormalize([1, 0, 0, 1]), [0.5 / (s + 1e-4), -0.5 / (s + 1e-4), -0.5 / (s + 1e-4), 0.5 / (s + 1e-4)]);
    // r = [3, 1]: mean 2, unbiased σ = sqrt(2) -> ±1/(1.41421+1e-4)
    close(groupNormalize([3, 1]), [1 / (Math.SQRT2 + 1e-4), -1 / (Math.SQRT2 + 1e-4)]);
  });
  it('population σ option', () => {
    // r = [1, 0, 0, 1]: population σ = 0.5
    close(groupNormalize([1, 0, 0, 1], { std: 'population', eps: 0 }), [1, -1, -1, 1]);
  });
  it('zero-variance group -> all zeros (no signal, no division by eps blow-up)', () => {
    close(groupNormalize([0.7, 0.7, 0.7]), [0, 0, 0]);
  });
  it('single-sample group -> zero advantage', () => {
    close(groupNormalize([5]), [0]);
    close(groupNormalize([5], { std: 'population', eps: 1e-4 }), [0]);
  });
  it('empty group and NaN rewards are typed errors', () => {
    expect(() => groupNormalize([])).toThrow(AdvantageError);
    expect(() => groupNormalize([])).toThrow(/empty group/);
    expect(() => groupNormalize([1, NaN])).toThrow(/reward 1 of the group is NaN/);
    expect(() => groupNormalize([Infinity, 1])).toThrow(AdvantageError);
  });
});

describe('eq. 3: pair weights', () => {
  it('aligned pairs weigh 1 in every mode', () => {
    for (const m of ['vanilla', 'pair', 'pairgrpo', 'linear', 'none'] as const)
      expect(pairWeight(m, 'aligned', 0.3)).toBe(1);
  });
  it('retrieved pairs: sqrt(s_p) in pairgrpo, s_p in linear, 1 otherwise', () => {
    expect(pairWeight('pairgrpo', 'retrieved', 0.64)).toBeCloseTo(0.8, 12);
    expect(pairWeight('linear', 'retrieved', 0.64)).toBeCloseTo(0.64, 12);
    expect(pairWeight('pair', 'retrieved', 0.64)).toBe(1);
    expect(pairWeight('none', 'retrieved', 0.64)).toBe(1);
    expect(pairWeight('vanilla', 'retrieved', 0.64)).toBe(1);
  });
  it('negative similarity carries no weight; NaN is an error', () => {
    expect(pairWeight('pairgrpo', 'retrieved', -0.2)).toBe(0);
    expect(() => pairWeight('pairgrpo', 'retrieved', NaN)).toThrow(AdvantageError);
  });
});

describe('eq. 2/4: per-(pair, side) groups times w_p', () => {
  it('aligned vs retrieved pairs with K = 2', () => {
    // pair 0 aligned (w=1), rewards [1, 0]; pair 1 retrieved s=0.25 (w=0.5), rewards [0, 1]
    const w = [pairWeight('pairgrpo', 'aligned', 1), pairWeight('pairgrpo', 'retrieved', 0.25)];
    const a = sideAdvantages([1, 0, 0, 1], 2, w);
    const u = 0.5 / (Math.SQRT1_2 + 1e-4); // unbiased σ of {1,0} = sqrt(0.5)
    close(a.adv, [u, -u, -0.5 * u, 0.5 * u], 1e-6);
    close(a.raw, [u, -u, -u, u], 1e-9);
    expect(a.zeroGroups).toBe(0);
  });
  it('counts zero-variance groups and keeps the other groups', () => {
    const a = sideAdvantages([1, 1, 0, 1], 2, [1, 1]);
    expect(a.zeroGroups).toBe(1);
    expect(a.adv[0]).toBe(0);
    expect(a.adv[1]).toBe(0);
    expect(a.adv[3]).toBeGreaterThan(0);
  });
  it('size mismatch, empty group (k = 0) and NaN name the item', () => {
    expect(() => sideAdvantages([1, 2, 3], 2, [1, 1])).toThrow(/expected 2 groups × 2 = 4 rewards, got 3/);
    expect(() => sideAdvantages([], 0, [1])).toThrow(/empty group/);
    expect(() => sideAdvantages([1, 2, NaN, 0], 2, [1, 1], undefined, ['pair-a', 'pair-b'])).toThrow(
      /pair-b: reward 0 of the group is NaN/,
    );
    try {
      sideAdvantages([1, 2, NaN, 0], 2, [1, 1]);
    } catch (e) {
      expect((e as AdvantageError).detail).toEqual({ item: 1, sample: 0, row: 2 });
    }
  });
  it('loss normalisation: vanilla averages over the mixed batch, paired modes per side', () => {
    expect(lossNorm('vanilla')).toBe('batch');
    expect(lossNorm('pairgrpo')).toBe('side');
  });
});

describe('clipped surrogate (TS reference)', () => {
  const one = (r: number) => Math.log(r);
  it('clips on both sides of 1 (eps 0.2)', () => {
    // five one-token trajectories, coefficient 1/(5·1) each (seq_mean over 5 trajectories)
    const ratios = [1.5, 1.5, 0.5, 0.5, 1.1];
    const adv = [2, -2, 2, -2, 1];
    const res = clippedSurrogate([
      { logp: ratios.map(one), old: [0, 0, 0, 0, 0], mask: [1, 1, 1, 1, 1], adv, length: 1 },
    ]);
    // min(rA, clip(r)A): 2.4 (clipped), -3.0, 1.0, -1.6 (clipped), 1.1 -> sum -0.1 -> loss = 0.1 / 5
    expect(res.loss).toBeCloseTo(0.1 / 5, 10);
    expect(res.clipped).toBe(2);
    expect(res.tokens).toBe(5);
  });
  it('sequence mean per side vs token mean vs batch normalisation', () => {
    const und = { mask: [1, 1, 0, 1, 1, 1], length: 3 }; // lengths 2, 3
    const gen = { mask: [1, 1, 1, 1], length: 4 };
    const c = trajCoefficients([und, gen], { epsLow: 0.2, epsHigh: 0.2, beta: 0, agg: 'seq_mean', norm: 'side' });
    close(c[0], [1 / 4, 1 / 6]);
    close(c[1], [1 / 4]);
    const t = trajCoefficients([und, gen], { epsLow: 0.2, epsHigh: 0.2, beta: 0, agg: 'token_mean', norm: 'batch' });
    close(t[0], [1 / 9, 1 / 9]);
    close(t[1], [1 / 9]);
    // token_sum (eq. 1–4 as printed): Σ_t, mean over pairs per side (eq. 2/4) or over trajectories (eq. 1)
    const s = trajCoefficients(
      [
        { ...und, items: 1 },
        { ...gen, items: 1 },
      ],
      { epsLow: 0.2, epsHigh: 0.2, beta: 0, agg: 'token_sum', norm: 'side' },
    );
    close(s[0], [1, 1]);
    close(s[1], [1]);
    const b = trajCoefficients([und, gen], { epsLow: 0.2, epsHigh: 0.2, beta: 0, agg: 'token_sum', norm: 'batch' });
    close(b[0], [1 / 3, 1 / 3]);
    close(b[1], [1 / 3]);
    expect(() =>
      trajCoefficients([und, gen], { epsLow: 0.2, epsHigh: 0.2, beta: 0, agg: 'token_sum', norm: 'side' }),
    ).toThrow(/item count/);
  });
  it.each([
    ['seq_mean', 0], // −1/(2·1) + 3 · 1/(2·3)
    ['token_mean', 0.5], // (−1 + 3) / 4 tokens
    ['token_sum', 2], // −1 + 3, one pair
  ] as const)('loss of one item under %s (hand-computed): %s', (agg, want) => {
    // two trajectories at ratio 1: a 1-token answer with A = +1, a 3-token answer with A = −1
    const side = {
      logp: [0, 0, 0, 0, 0, 0],
      old: [0, 0, 0, 0, 0, 0],
      mask: [1, 0, 0, 1, 1, 1],
      adv: [1, -1],
      length: 3,
      items: 1,
    };
    expect(clippedSurrogate([side], { epsLow: 0.2, epsHigh: 0.2, beta: 0, agg, norm: 'side' }).loss).toBeCloseTo(
      want,
      12,
    );
  });
  it('k3 KL term', () => {
    const res = clippedSurrogate(
      [{ logp: [Math.log(0.5)], old: [Math.log(0.5)], ref: [Math.log(0.25)], mask: [1], adv: [0], length: 1 }],
      { epsLow: 0.2, epsHigh: 0.2, beta: 0.1, agg: 'seq_mean', norm: 'side' },
    );
    const d = Math.log(0.25) - Math.log(0.5);
    expect(res.loss).toBeCloseTo(0.1 * (Math.exp(d) - d - 1), 12);
  });
});

describe('understanding reward', () => {
  it('parses the answer letter', () => {
    expect(parseAnswerLetter('<think>two cats</think><answer>B</answer>')).toBe('B');
    expect(parseAnswerLetter('<think>x</think> <answer>(C) a dog</answer>')).toBe('C');
    expect(parseAnswerLetter('<answer>D.</answer>')).toBe('D');
    expect(parseAnswerLetter('A')).toBe('A');
    expect(parseAnswerLetter('<think>hmm</think>B) blue')).toBe('B');
    expect(parseAnswerLetter('I think it is B')).toBeNull();
    expect(parseAnswerLetter('<answer>none</answer>')).toBeNull();
    expect(parseAnswerLetter('')).toBeNull();
  });
  it('accuracy plus optional format reward', () => {
    expect(undReward('<think>t</think><answer>B</answer>', 'B')).toEqual({
      reward: 1,
      correct: true,
      format: true,
      letter: 'B',
    });
    expect(undReward('<think>t</think><answer>B</answer>', 'A', 0.5).reward).toBe(0.5);
    expect(undReward('B', 'B', 0.5).reward).toBe(1);
    expect(formatOk('<think>a</think>\n<answer>C</answer>\n')).toBe(true);
    expect(formatOk('<answer>C</answer>')).toBe(false);
  });
  it('renders the question with lettered choices', () => {
    expect(renderQuestion('How many?', ['one', 'two'], '{question}\n{choices}')).toBe('How many?\nA. one\nB. two');
  });
});
