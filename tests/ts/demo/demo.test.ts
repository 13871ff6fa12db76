/** CI runs a shortened demo: it must complete end to end and write its report. */
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_MODEL, runDemo, type DemoResult } from '../../../src/demo/demo.js';
import { AbortedError, PairuniError } from '../../../src/errors.js';
import { spawnSync } from 'node:child_process';
import { readEvals, readMetrics } from '../../../src/train/index.js';
import { resolvePython, sidecarSourceDir } from '../../../src/sidecar/python.js';

/** A W&B offline run directory's history, read with W&B's own records (pairuni_sidecar.sinks.read). */
function readWandb(dir: string): Array<{ history: Array<Record<string, number>> }> {
  const r = spawnSync(resolvePython(), ['-m', 'pairuni_sidecar.sinks.read', '--wandb', dir], {
    encoding: 'utf8',
    env: { ...process.env, PYTHONPATH: sidecarSourceDir() },
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout).wandb;
}

const out = mkdtempSync(join(tmpdir(), 'pairuni-demo-'));
const scratch = mkdtempSync(join(tmpdir(), 'pairuni-demo-b-'));
afterAll(() => {
  rmSync(out, { recursive: true, force: true });
  rmSync(scratch, { recursive: true, force: true });
});
let first: DemoResult | undefined;

describe('demo (quick)', () => {
  it('runs world → pairs → eval → PairGRPO (PairUG and random) → eval → report, then resumes as a no-op', async () => {
    const lines: string[] = [];
    const res = await runDemo({ out, quick: true, log: (l) => lines.push(l) });
    first = res;
    expect(existsSync(res.report)).toBe(true);
    const md = readFileSync(res.report, 'utf8');
    expect(md).toContain('PairGRPO on PairUG');
    expect(md).toContain('PairGRPO on random pairs');
    expect(md).toContain('<svg');
    // Held out means held out: measured against u_train, g_train and the shipped model's pretraining pool.
    expect(res.overlap).toMatchObject({ uEval: 24, uDuplicates: 0, gEval: 24, gVerbatim: 0 });
    // The pretraining pool is checked only for a model pretrained under the held-out rules (its card says so).
    const card = JSON.parse(readFileSync(join(DEFAULT_MODEL, 'pairuni_model.json'), 'utf8'));
    if (card.pretrain.heldout_rules === 'heldout/1') {
      expect(res.overlap.pretrain).toEqual({ seed: card.pretrain.config.seed, nItems: card.pretrain.config.n_items });
      expect(res.overlap.caveat).toBeNull();
    } else {
      expect(res.overlap.pretrain).toBeNull();
      expect(md).toContain(`**Not checked:** ${res.overlap.caveat}`);
    }
    expect(md).toContain('**0 of 24** held-out understanding items');
    expect(md).toContain('**0 of 24** held-out generation prompts');
    // One seed: the paired difference is the seed's own difference, without an interval.
    expect(res.paired.und.n).toBe(1);
    expect(res.paired.und.mean).toBeCloseTo(res.after.pairgrpo[0].und_accuracy - res.after.random[0].und_accuracy, 12);
    expect(res.paired.gen.mean).toBeCloseTo(res.after.pairgrpo[0].gen_reward - res.after.random[0].gen_reward, 12);
    expect(md).toMatch(/\| understanding accuracy \| [+-]\d\.\d{3} \(n = 1, no interval\) \| one seed: no interval \|/);
    // The mechanism: every step logged the und–gen gradient cosine; the report averages it per run.
    for (const v of ['pairgrpo', 'random'] as const) {
      const rows = readMetrics(join(res.report, '..', 'runs', `${v}-s0`));
      expect(rows.length).toBeGreaterThan(0);
      expect(rows.every((m) => typeof m.grad_cos === 'number' && Math.abs(m.grad_cos) <= 1)).toBe(true);
      const mean = rows.reduce((a, m) => a + (m.grad_cos as number), 0) / rows.length;
      expect(res.summary[v].gradCos.mean).toBeCloseTo(mean, 12);
    }
    expect(res.paired.gradCos.mean).toBeCloseTo(
      res.summary.pairgrpo.gradCos.mean - res.summary.random.gradCos.mean,
      12,
    );
    expect(md).toContain('## Mechanism: cosine between the understanding and generation gradients');
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
    const pairs = readFileSync(join(out, 'pairug', 'pairs.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
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
  }, 1_800_000);

  it('refuses to resume with a different recipe or model (stale pairs/checkpoints), writing nothing', async () => {
    const timing = readFileSync(join(out, 'timing.json'), 'utf8');
    const err = await runDemo({ out, quick: true, steps: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PairuniError);
    expect((err as Error).message).toMatch(/different plan \(steps: 2 there, 1 now\).*another --out/);
    const model = join(scratch, 'model');
    cpSync(DEFAULT_MODEL, model, { recursive: true });
    writeFileSync(join(model, 'config.json'), readFileSync(join(model, 'config.json'), 'utf8') + '\n');
    const err2 = await runDemo({ out, quick: true, model }).catch((e: unknown) => e);
    expect((err2 as Error).message).toMatch(/model: .*tiny-janus-shapes there, .*model now \(different weights\)/);
    expect(readFileSync(join(out, 'timing.json'), 'utf8')).toBe(timing);
    expect(JSON.parse(readFileSync(join(out, 'plan.json'), 'utf8'))).toMatchObject({
      steps: 2,
      k: 4,
      world: { u_train: 96 },
    });
  });

  it('interrupted during training, the same call resumes; a second demo started beside it (each loading the machine for the other, and evaluating during training into W&B): both end with the uninterrupted numbers', async () => {
    // One test, not two: the twin that loads the machine is also the check that concurrent demos agree
    // and that evaluating during training leaves training alone, so the file runs three quick demos
    // (and a resumed one) instead of five.
    expect(first).toBeDefined();
    const dir = join(scratch, 'interrupted');
    const twinOut = join(scratch, 'twin');
    const twin = runDemo({
      out: twinOut,
      quick: true,
      evalEvery: 1,
      loggers: ['jsonl', 'wandb'],
      log: () => {},
    });
    const resumed = (async () => {
      const ac = new AbortController();
      const err = await runDemo({
        out: dir,
        quick: true,
        signal: ac.signal,
        log: () => {},
        onStep: () => ac.abort(),
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AbortedError);
      expect(existsSync(join(dir, 'report.md'))).toBe(false);
      const lines: string[] = [];
      const res = await runDemo({ out: dir, quick: true, log: (l) => lines.push(l) });
      expect(lines.join('\n')).toMatch(/already built/);
      expect(lines.join('\n')).toMatch(/pretrained model already evaluated/);
      return res;
    })();
    // Both finish before any verdict: a failure must not leave a demo running into afterAll's cleanup.
    const settled = await Promise.allSettled([resumed, twin]);
    const runs = settled.map((r) => {
      if (r.status === 'rejected') throw r.reason;
      return r.value;
    });
    for (const res of runs) {
      expect({ ...res.before, grid: '' }).toEqual({ ...first!.before, grid: '' }); // the grid path names the out dir
      for (const v of ['pairgrpo', 'random'] as const)
        expect(res.after[v][0]).toEqual({ ...first!.after[v][0], grid: res.after[v][0].grid });
    }
    // The twin evaluated after steps 0, 1 and 2 of each run, logged eval/* and wrote it to its W&B run.
    const md = readFileSync(runs[1].report, 'utf8');
    expect(md).toContain('## During training: held-out evaluations');
    // One seed: the table's last row is the two runs' own last evaluations.
    const last = (v: string, k: `eval/${string}`) => readEvals(join(twinOut, 'runs', `${v}-s0`))[2][k].toFixed(3);
    expect(md).toContain(
      `| 2 | ${last('pairgrpo', 'eval/und_acc')} | ${last('random', 'eval/und_acc')} | ` +
        `${last('pairgrpo', 'eval/gen_reward')} | ${last('random', 'eval/gen_reward')} |`,
    );
    for (const v of ['pairgrpo', 'random'] as const) {
      const runDir = join(twinOut, 'runs', `${v}-s0`);
      const evals = readEvals(runDir);
      expect(evals.map((e) => e.step)).toEqual([0, 1, 2]);
      for (const e of evals) {
        expect(e['eval/und_acc']).toBeGreaterThanOrEqual(0);
        expect(e['eval/und_acc']).toBeLessThanOrEqual(1);
        expect(e['eval/gen_reward']).toBeGreaterThanOrEqual(0);
        expect(e['eval/gen_reward']).toBeLessThanOrEqual(1);
      }
      const wandb = readWandb(join(runDir, 'wandb'));
      const logged = new Map(wandb.flatMap((r) => r.history).map(({ _step, ...h }) => [Number(_step), h]));
      for (const e of evals) expect(logged.get(e.step)?.['eval/und_acc']).toBe(e['eval/und_acc']);
    }
  }, 1_800_000);
});
