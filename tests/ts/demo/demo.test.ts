/** CI runs a shortened demo: it must complete end to end and write its report. */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runDemo } from '../../../src/demo/demo.js';

const out = mkdtempSync(join(tmpdir(), 'pairuni-demo-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('demo (quick)', () => {
  it('runs world → pairs → eval → PairGRPO (PairUG and random) → eval → report, then resumes as a no-op', async () => {
    const lines: string[] = [];
    const res = await runDemo({ out, quick: true, log: (l) => lines.push(l) });
    expect(existsSync(res.report)).toBe(true);
    const md = readFileSync(res.report, 'utf8');
    expect(md).toContain('PairGRPO on PairUG');
    expect(md).toContain('PairGRPO on random pairs');
    expect(md).toContain('<svg');
    for (const v of ['pairgrpo', 'random'] as const) {
      const e = res.after[v][0];
      expect(e.und_accuracy).toBeGreaterThanOrEqual(0);
      expect(e.und_accuracy).toBeLessThanOrEqual(1);
      expect(e.gen_reward).toBeGreaterThanOrEqual(0);
      expect(e.gen_reward).toBeLessThanOrEqual(1);
    }
    // Before/after grids: one PNG per evaluated model, the same prompts, linked from the report.
    for (const name of ['pretrained', 'pairgrpo-s0', 'random-s0']) {
      const png = readFileSync(join(out, 'eval', `${name}-grid.png`));
      expect(png.subarray(1, 4).toString()).toBe('PNG');
      expect(md).toContain(`eval/${name}-grid.png`);
    }
    expect(res.before.grid_prompts).toHaveLength(16);
    const pairs = readFileSync(join(out, 'pairug', 'pairs.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(pairs.some((p) => p.type === 'aligned')).toBe(true);
    // A second run finds every phase done and only rewrites the report.
    const again: string[] = [];
    await runDemo({ out, quick: true, log: (l) => again.push(l) });
    expect(again.join('\n')).toMatch(/already built/);
    expect(again.join('\n')).toMatch(/already trained/);
    // The report counts the wall time of both invocations.
    const timing = JSON.parse(readFileSync(join(out, 'timing.json'), 'utf8'));
    expect(timing.invocations).toBe(2);
    expect(timing.seconds).toBeGreaterThanOrEqual(res.seconds);
    expect(readFileSync(res.report, 'utf8')).toMatch(/over 2 invocations/);
  }, 600_000);
});
