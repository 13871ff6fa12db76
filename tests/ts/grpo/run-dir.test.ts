/**
 * The run directory without a sidecar: what an interrupted write leaves is cleaned up, an unusable
 * `out` is refused by name, and a resume from an older checkpoint discards the later steps in
 * metrics.jsonl, TensorBoard and the sample grids alike.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  assertUsableOut,
  decodeEvent,
  readMetrics,
  readRecords,
  removeStaleTemps,
  RunLog,
  RunStateError,
  SESSION_STATUS,
  type StepMetrics,
} from '../../../src/train/index.js';
import { expectedScalars, tensorboardScalars } from './tb-view.js';

const root = mkdtempSync(join(tmpdir(), 'pairuni-rundir-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A logged row: the keys every step has, and one PairGRPO key. */
const row = (step: number, loss: number, undReward: number): StepMetrics => ({
  step,
  epoch: 0,
  loss,
  grad_norm: 1,
  lr: 1e-6,
  'time/update': 0.5,
  'time/step': 1,
  'und/reward': undReward,
});

/** A PID that belonged to a process which has exited (and been reaped). */
const deadPid = () => spawnSync(process.execPath, ['-e', '']).pid!;

describe('stale temp files of interrupted writes', () => {
  it("removes temps of exited processes and of this PID, keeps other live processes' and .old copies", () => {
    const out = join(root, 'stale');
    const ck = join(out, 'checkpoints');
    const dead = deadPid();
    expect(() => process.kill(dead, 0)).toThrow();
    const live = process.ppid; // the test runner's parent: alive for the whole test
    // A SIGKILL during writeCheckpoint leaves a full copy of the checkpoint, the sidecar's own policy temp dir inside.
    const killed = join(ck, `.tmp-step-000004-${dead}`);
    mkdirSync(join(killed, 'policy', `.policy.tmp-${dead}-0badc0de`, 'model'), { recursive: true });
    writeFileSync(join(killed, 'policy', `.policy.tmp-${dead}-0badc0de`, 'model', 'model.safetensors'), 'weights');
    mkdirSync(join(ck, `.tmp-step-000002-${process.pid}`)); // an earlier process with this PID (containers reuse PIDs)
    mkdirSync(join(ck, `.tmp-step-000006-${live}`)); // a concurrent writer: kept
    mkdirSync(join(ck, 'step-000003', 'policy'), { recursive: true });
    writeFileSync(join(ck, 'latest'), 'step-000003\n');
    writeFileSync(join(ck, `.latest.tmp-${dead}-1234abcd`), 'step-000004\n');
    writeFileSync(join(out, `.metrics.jsonl.tmp-${dead}-89abcdef`), '{}\n');
    mkdirSync(join(out, 'samples'));
    writeFileSync(join(out, 'samples', `.step-000004.png.tmp-${dead}-00ff00ff`), 'png');
    mkdirSync(join(ck, `.policy.old-${dead}-0badc0de`)); // atomic_dir's set-aside copy: maybe the only one, never removed

    const removed = removeStaleTemps(out);
    expect(removed.sort()).toEqual(
      [
        killed,
        join(ck, `.tmp-step-000002-${process.pid}`),
        join(ck, `.latest.tmp-${dead}-1234abcd`),
        join(out, `.metrics.jsonl.tmp-${dead}-89abcdef`),
        join(out, 'samples', `.step-000004.png.tmp-${dead}-00ff00ff`),
      ].sort(),
    );
    expect(readdirSync(ck).sort()).toEqual(
      [`.policy.old-${dead}-0badc0de`, `.tmp-step-000006-${live}`, 'latest', 'step-000003'].sort(),
    );
    expect(readdirSync(join(out, 'samples'))).toEqual([]);
    expect(removeStaleTemps(join(root, 'no-such-run'))).toEqual([]);
  });
});

describe('an unusable out', () => {
  it('is refused by name before anything is created: a file, a path under a file, a read-only parent', () => {
    const file = join(root, 'scratch.jsonl');
    writeFileSync(file, '{}\n');
    expect(() => assertUsableOut(file)).toThrow(RunStateError);
    expect(() => assertUsableOut(file)).toThrow(
      `cannot use out ${file} as the run directory: it is a file, not a directory; choose another \`out\``,
    );
    try {
      assertUsableOut(file);
    } catch (e) {
      expect((e as RunStateError).cliMessage).toMatch(/choose another --out$/);
    }
    expect(() => assertUsableOut(join(file, 'run'))).toThrow(`${file} is a file, not a directory`);
    assertUsableOut(join(root, 'new', 'deeper')); // creatable: fine, and nothing is created
    expect(existsSync(join(root, 'new'))).toBe(false);
    if (process.getuid?.() !== 0) {
      // root may write anywhere; everyone else is refused a read-only parent
      const ro = join(root, 'ro');
      mkdirSync(ro, { mode: 0o555 });
      expect(() => assertUsableOut(join(ro, 'run'))).toThrow(/is not writable/);
    }
  });
});

describe('RunLog: a resume from an older checkpoint', () => {
  it('metrics.jsonl, TensorBoard and the sample grids all drop the steps after the restored one', () => {
    const out = join(root, 'resume');
    const tb = join(out, 'tensorboard');
    const png = (step: number) => join(out, 'samples', `step-${String(step).padStart(6, '0')}.png`);
    // First process: steps 1..4 logged, checkpoint at 2, then killed.
    const first = new RunLog(out, true);
    first.startAt(0);
    for (const step of [1, 2, 3, 4]) first.write(row(step, step, step / 10));
    first.close();
    mkdirSync(join(out, 'samples'));
    for (const s of [2, 4]) writeFileSync(png(s), 'png');
    // Second process, usually within the same second: resumes from step 2, redoes step 3, is stopped.
    const second = new RunLog(out, true);
    second.startAt(2);
    second.write(row(3, 30, 0.5));
    // An in-process sidecar restart from the same checkpoint: step 3 again.
    second.startAt(2);
    second.write(row(3, 31, 0.25));
    second.close();

    expect(readMetrics(out)).toEqual([row(1, 1, 0.1), row(2, 2, 0.2), row(3, 31, 0.25)]);
    expect(tensorboardScalars(tb)).toEqual(expectedScalars(readMetrics(out)));
    // One new file per (re)start, each sorting after the previous ones, each opened with a START.
    const files = readdirSync(tb).sort();
    expect(files).toHaveLength(3);
    const starts = files.map((f) => readRecords(readFileSync(join(tb, f))).map(decodeEvent)[1]);
    expect(starts.map((e) => [e.step, e.sessionLog?.status])).toEqual([
      [1, SESSION_STATUS.start],
      [3, SESSION_STATUS.start],
      [3, SESSION_STATUS.start],
    ]);
    expect(existsSync(png(2))).toBe(true);
    expect(existsSync(png(4))).toBe(false);
  });
});
