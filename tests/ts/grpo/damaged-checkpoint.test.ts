/**
 * A damaged checkpoint on resume: a newer one whose policy.json is gone or whose trainer.json is
 * garbled is passed over for the one before it, and the trainer says which and why (its steps are
 * redone); a checkpoint the sidecar cannot read gives the typed error alone, no Python traceback.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_MODELS } from '../../../src/demo/demo.js';
import { writeTinyPairUG } from '../../../src/train/fixtures.js';
import { latestCheckpoint, readMetrics, type SkippedCheckpoint } from '../../../src/train/index.js';
import { pairuni as run } from '../cli/_pairuni.js';

const dir = mkdtempSync(join(tmpdir(), 'pairuni-damaged-ck-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A run directory holding checkpoints of the given steps, as writeCheckpoint lays them out. */
function fakeRun(out: string, steps: number[]): void {
  for (const step of steps) {
    const ck = join(out, 'checkpoints', `step-${String(step).padStart(6, '0')}`);
    mkdirSync(join(ck, 'policy'), { recursive: true });
    writeFileSync(join(ck, 'policy', 'policy.json'), '{"format":"pairuni-policy/2"}');
    writeFileSync(
      join(ck, 'trainer.json'),
      JSON.stringify({ format: 'pairuni-train/1', step, config: {}, restarts: 0 }),
    );
  }
  writeFileSync(join(out, 'checkpoints', 'latest'), `step-${String(steps[steps.length - 1]).padStart(6, '0')}\n`);
}

describe('latestCheckpoint passes over a damaged newer checkpoint and says so', () => {
  it.each<[string, (ck: string) => void, string]>([
    ['policy.json deleted', (ck) => rmSync(join(ck, 'policy', 'policy.json')), 'policy/policy.json is missing'],
    [
      'trainer.json garbled',
      (ck) => writeFileSync(join(ck, 'trainer.json'), '{"format": "pairuni-tr'),
      'trainer.json is unreadable (',
    ],
    ['trainer.json deleted', (ck) => rmSync(join(ck, 'trainer.json')), 'trainer.json is missing'],
  ])('%s', (_what, damage, reason) => {
    const out = join(dir, `fake-${reason.replace(/\W+/g, '-')}`);
    fakeRun(out, [1, 2]);
    const newest = join(out, 'checkpoints', 'step-000002');
    damage(newest);
    const skipped: SkippedCheckpoint[] = [];
    const ck = latestCheckpoint(out, (s) => skipped.push(s));
    expect(ck?.state.step).toBe(1);
    expect(skipped).toHaveLength(1);
    expect(skipped[0].dir).toBe(newest);
    expect(skipped[0].reason.startsWith(reason)).toBe(true);
  });

  it('an intact run reports nothing', () => {
    const out = join(dir, 'fake-intact');
    fakeRun(out, [1, 2]);
    const skipped: SkippedCheckpoint[] = [];
    expect(latestCheckpoint(out, (s) => skipped.push(s))?.state.step).toBe(2);
    expect(skipped).toEqual([]);
  });
});

const pairuni = (...argv: string[]) => run(argv, { stderrWrites: true });

describe('pairuni train --resume on a damaged run (real sidecar, the shipped tiny Janus)', () => {
  let source: string;
  const configFile = (out: string) => {
    const file = join(dir, `${out}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        data: join(dir, 'data', 'pairs.jsonl'),
        out: join(dir, out),
        model: {
          path: DEMO_MODELS.janus,
          device: 'cpu',
          gradientCheckpointing: false,
          trainModules: ['language_model', 'vision'],
        },
        steps: 2,
        batchPairs: 1,
        und: { k: 2, maxNewTokens: 4 },
        gen: { k: 2, reward: { name: 'brightness' } },
        log: { sampleEvery: 0, tensorboard: false },
        checkpoint: { every: 1, keep: 0 },
        sidecar: { threads: 1 },
      }),
    );
    return file;
  };
  /** A copy of the 2-step source run under a new name (its config file pointing at it). */
  const copyRun = (name: string) => {
    cpSync(source, join(dir, name), { recursive: true });
    return configFile(name);
  };

  beforeAll(async () => {
    writeTinyPairUG(join(dir, 'data'), 4);
    const r = await pairuni('train', '--config', configFile('source'), '--quiet');
    expect(r).toMatchObject({ code: 0 });
    source = join(dir, 'source');
  }, 300_000);

  it('policy.json of the newest checkpoint deleted: a warning names it and why, then step 2 is redone from step 1', async () => {
    const cfg = copyRun('no-policy');
    const newest = join(dir, 'no-policy', 'checkpoints', 'step-000002');
    rmSync(join(newest, 'policy', 'policy.json'));
    const r = await pairuni('train', '--config', cfg, '--resume', '--quiet');
    expect(r.code).toBe(0);
    expect(r.err).toEqual([`pairuni train: warning: skipping checkpoint ${newest}: policy/policy.json is missing`]);
    expect(readMetrics(join(dir, 'no-policy')).map((m) => m.step)).toEqual([1, 2]);
  }, 300_000);

  it('a corrupt state/.metadata: the typed error alone, no Python traceback lines before it', async () => {
    const cfg = copyRun('bad-metadata');
    const out = join(dir, 'bad-metadata');
    for (const s of ['step-000001', 'step-000002'])
      writeFileSync(join(out, 'checkpoints', s, 'policy', 'state', '.metadata'), 'not a pickle');
    const r = await pairuni('train', '--config', cfg, '--resume', '--steps', '3', '--quiet');
    expect(r.code).toBe(1);
    expect(r.err).toHaveLength(1);
    // CheckpointCorrupt travels as op_failed (README, Checkpoints), naming the directory and what failed.
    expect(r.err[0]).toMatch(
      /^pairuni train: OpFailedError \[op_failed\]: train\.load: checkpoint '[^']*step-000002\/policy': its DCP state \(state\/\) cannot be read into this janus model: /,
    );
    expect(readFileSync(join(out, 'checkpoints', 'latest'), 'utf8').trim()).toBe('step-000002');
  }, 300_000);
});
