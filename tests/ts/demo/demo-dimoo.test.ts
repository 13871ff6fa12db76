/** CI runs the shortened demo on the shipped tiny masked-diffusion (DiMOO) model: the same pipeline and report. */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEMO_MODELS, runDemo } from '../../../src/demo/demo.js';
import { ConfigError } from '../../../src/errors.js';

const out = mkdtempSync(join(tmpdir(), 'pairuni-demo-dimoo-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('demo --family dimoo (quick)', () => {
  it('runs world → pairs → eval → PairGRPO (PairUG and random) → eval → report with the DiMOO adapter', async () => {
    const card = JSON.parse(readFileSync(join(DEMO_MODELS.dimoo, 'pairuni_model.json'), 'utf8'));
    expect(card.family).toBe('dimoo');
    const res = await runDemo({ out, quick: true, family: 'dimoo', log: () => {} });
    const md = readFileSync(res.report, 'utf8');
    expect(md).toContain('Tiny masked-diffusion DiMOO pretrained on ShapesWorld');
    expect(md).toContain('PairGRPO on random pairs');
    const cfg = JSON.parse(readFileSync(join(out, 'runs', 'pairgrpo-s0', 'config.json'), 'utf8'));
    expect(cfg.model.adapter).toBe('dimoo');
    for (const v of ['pairgrpo', 'random'] as const) {
      const e = res.after[v][0];
      expect(e.und_accuracy).toBeGreaterThanOrEqual(0);
      expect(e.und_accuracy).toBeLessThanOrEqual(1);
      expect(e.gen_reward).toBeGreaterThanOrEqual(0);
      expect(e.gen_reward).toBeLessThanOrEqual(1);
      expect(existsSync(join(out, 'eval', `${v}-s0-grid.png`))).toBe(true);
    }
  }, 2_700_000);

  it('refuses an unknown family before any work', async () => {
    await expect(runDemo({ out: join(out, 'x'), quick: true, family: 'bagel' as never })).rejects.toThrow(ConfigError);
    expect(existsSync(join(out, 'x'))).toBe(false);
  });
});
