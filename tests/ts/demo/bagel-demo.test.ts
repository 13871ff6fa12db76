/** CI runs the Bagel demo's quick variant: world → pairs → the shipped pretrained tiny Bagel → SFT on PairUG and on random pairs → held-out understanding and generation → report. */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runBagelDemo } from '../../../src/demo/bagel.js';
import { PairuniError } from '../../../src/errors.js';
import { readMetrics } from '../../../src/train/metrics.js';

const out = mkdtempSync(join(tmpdir(), 'pairuni-bagel-demo-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('demo --family bagel (quick)', () => {
  it('trains both pair sets with SFT, scores held-out option letters before and after, and reruns as a no-op', async () => {
    const res = await runBagelDemo({ out, quick: true, log: () => undefined });
    const md = readFileSync(res.report, 'utf8');
    expect(md).toContain('SFT on PairUG');
    expect(md).toContain('SFT on random pairs');
    expect(md).toContain('held-out generation reward');
    expect(res.before.n_und).toBe(24);
    // The shipped asset was pretrained under the held-out rules: nothing it or the demo trains on is evaluated.
    expect(res.overlap).toMatchObject({ uEval: 24, uDuplicates: 0, gEval: 8, gVerbatim: 0, caveat: null });
    expect(res.overlap.pretrain).toEqual({ seed: 0, nItems: 12000 });
    expect(md).toContain('Train/eval overlap (the world');
    expect(md).toContain('0/24 understanding items, 0/8 generation prompts');
    // The demo starts from the pretrained asset, not a letter prior: above chance (0.25, four options) by
    // more than three items, and drawing what the prompts ask for more than a random init (~0.01, results.md).
    expect(res.before.und_accuracy).toBeGreaterThan(0.25 + 3 / 24);
    expect(res.before.gen_reward).toBeGreaterThan(0.1);
    expect(md).toContain('| pretrained (before SFT) |');
    // generation: 2 ODE samples for each of the 8 held-out prompts, shapes reward in [0, 1], per category, a grid per model
    for (const e of [res.before, res.after.pairug[0], res.after.random[0]]) {
      expect([e.n_gen_prompts, e.samples_per_prompt]).toEqual([8, 2]);
      expect(e.gen_reward).toBeGreaterThanOrEqual(0);
      expect(e.gen_reward).toBeLessThanOrEqual(1);
      expect(Object.keys(e.gen_reward_by_category).length).toBeGreaterThan(0);
    }
    expect(res.genSummary.pairug.mean).toBe(res.after.pairug[0].gen_reward);
    for (const g of ['pretrained', 'pairug-s0', 'random-s0'])
      expect(existsSync(join(out, 'eval', `${g}.png`))).toBe(true);
    // 24 items with 4 options each: accuracy is a multiple of 1/24
    for (const e of [res.before, res.after.pairug[0], res.after.random[0]]) {
      expect(Math.abs(e.und_accuracy * 24 - Math.round(e.und_accuracy * 24))).toBeLessThan(1e-3);
    }
    for (const v of ['pairug', 'random']) {
      const rows = readMetrics(join(out, 'runs', `${v}-s0`));
      expect(rows.map((r) => r.step)).toEqual([1, 2]);
      for (const r of rows) {
        expect(r.ce).toBeGreaterThan(0);
        expect(r.mse).toBeGreaterThan(0);
      }
    }
    // The report's wall time is the demo's: this invocation built, trained and evaluated everything.
    const first = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as {
      wallSeconds: number;
      invocations: number;
    };
    expect(first.invocations).toBe(1);
    expect(first.wallSeconds).toBe(res.seconds);
    expect(first.wallSeconds).toBeGreaterThan(0);
    expect(md).toContain(`Wall time ${first.wallSeconds} s.`);
    // Everything is cached: the rerun trains and evaluates nothing and reports the same numbers,
    // and its own few seconds are added to the wall time rather than written over it.
    const again = await runBagelDemo({ out, quick: true, log: () => undefined });
    expect(again.summary).toEqual(res.summary);
    expect(existsSync(join(out, 'eval', 'pretrained.json'))).toBe(true);
    const second = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as {
      wallSeconds: number;
      invocations: number;
    };
    expect(second).toMatchObject({ wallSeconds: first.wallSeconds + again.seconds, invocations: 2 });
    expect(again.wallSeconds).toBe(second.wallSeconds);
    expect(readFileSync(again.report, 'utf8')).toContain(`Wall time ${second.wallSeconds} s over 2 invocations`);
    // A different plan on the same directory would mix stale results: refused before any work, naming what differs.
    const refused = await runBagelDemo({ out, quick: true, steps: 3, log: () => undefined }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(PairuniError);
    expect((refused as Error).message).toContain('different plan (steps: 2 there, 3 now)');
  }, 1_800_000);
});
