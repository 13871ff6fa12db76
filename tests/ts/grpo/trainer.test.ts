/**
 * The TS trainer end to end on a tiny Janus through real sidecars: resume after Ctrl-C and a
 * sidecar killed mid-run both continue bit for bit; bad inputs fail with typed errors and leave
 * nothing half-written.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { run as cli } from '../../../src/cli/commands/train.js';
import { AbortedError, ConfigError, RewardError, SidecarError } from '../../../src/errors.js';
import { resolvePython, Sidecar } from '../../../src/sidecar/index.js';
import { writeTinyPairUG } from '../../../src/train/fixtures.js';
import {
  decodeEvent,
  latestCheckpoint,
  parseTrainConfig,
  readMetrics,
  readRecords,
  RunStateError,
  train,
  type StepMetrics,
} from '../../../src/train/index.js';
import { expectedScalars, tensorboardScalars } from './tb-view.js';

let dir: string;
let modelDir: string;
let dataFile: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'pairuni-trainer-'));
  modelDir = join(dir, 'tiny');
  const r = spawnSync(resolvePython(), ['-m', 'pairuni_sidecar.adapters.tiny', modelDir], {
    env: { ...process.env, PYTHONPATH: join(process.cwd(), 'python_sidecar') },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`building the tiny model failed: ${r.stderr}`);
  dataFile = writeTinyPairUG(join(dir, 'data'), 6);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config = (out: string, over: Record<string, unknown> = {}) =>
  parseTrainConfig({
    data: dataFile,
    out: join(dir, out),
    model: { path: modelDir, device: 'cpu' },
    steps: 3,
    batchPairs: 2,
    und: { k: 4, maxNewTokens: 6 },
    gen: { k: 4, reward: { name: 'brightness' } },
    optim: { lr: 2e-3, microBatch: 16 },
    log: { sampleEvery: 2, gradCosine: true },
    checkpoint: { every: 1, keep: 0 },
    sidecar: { threads: 1 },
    ...over,
  });

const quiet = { onLog: () => undefined };
/**
 * The limit for a test that starts sidecars and trains (20-40 s on 2 quiet cores, several times that on
 * busy ones): a busy machine must not fail it; a hang still does. Other tests here take vitest's 5 min.
 */
const TRAINS = 900_000;
/** Everything but wall-clock figures. */
const stable = (ms: StepMetrics[]) =>
  ms.map((m) => Object.fromEntries(Object.entries(m).filter(([k]) => !k.startsWith('time/') && k !== 'tokens_per_s')));
const weights = (ckpt: string) =>
  createHash('sha256')
    .update(readFileSync(join(ckpt, 'policy', 'model', 'model.safetensors')))
    .digest('hex');
/** TensorBoard's view of the run equals metrics.jsonl: no step a restart discarded survives there. */
const tensorboardMatchesMetrics = (out: string) =>
  expect(tensorboardScalars(join(out, 'tensorboard'))).toEqual(expectedScalars(readMetrics(out)));
/** Spawns real sidecars and remembers them, to check that train() closed each one. */
function spawnTracked(before?: () => void) {
  const spawned: Sidecar[] = [];
  return {
    spawned,
    spawn: async () => {
      const sc = await Sidecar.spawn({ threads: 1 });
      spawned.push(sc);
      before?.();
      return sc;
    },
    /** After a test: nothing left running even when train() leaked a sidecar. */
    closeAll: () => Promise.all(spawned.map((sc) => sc.close().catch(() => undefined))),
  };
}
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const processGone = (pid: number) => {
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
};

describe('train(): checkpoints, resume, restart', () => {
  let reference: StepMetrics[];
  let refCkpt: string;

  it(
    'runs, logs JSONL + TensorBoard + sample grids, and checkpoints every step',
    async () => {
      const cfg = config('ref');
      const res = await train(cfg, quiet);
      expect(res.steps).toBe(3);
      expect(res.restarts).toBe(0);
      reference = readMetrics(cfg.out);
      refCkpt = res.checkpoint!;
      expect(reference.map((m) => m.step)).toEqual([1, 2, 3]);
      for (const k of [
        'und/reward',
        'und/acc',
        'gen/reward',
        'adv/und_mean_abs',
        'wp/mean',
        'und/clip_frac',
        'kl/old',
        'grad_norm',
        'grad_cos',
        'tokens_per_s',
        'time/rollout',
        'time/reward',
        'time/update',
        'time/transport',
        'time/step',
      ] as const) {
        expect(Number.isFinite(reference[0][k]), k).toBe(true);
      }
      expect(readdirSync(join(cfg.out, 'checkpoints')).sort()).toEqual([
        'latest',
        'step-000001',
        'step-000002',
        'step-000003',
      ]);
      expect(existsSync(join(cfg.out, 'samples', 'step-000002.png'))).toBe(true);
      const tb = readdirSync(join(cfg.out, 'tensorboard'));
      expect(tb).toHaveLength(1);
      const events = readRecords(readFileSync(join(cfg.out, 'tensorboard', tb[0]))).map(decodeEvent);
      const scalarSteps = events.filter((e) => e.summary?.some((v) => v.tag === 'und/reward')).map((e) => e.step);
      expect(scalarSteps).toEqual([1, 2, 3]);
      expect(events.some((e) => e.step === 2 && e.summary?.some((v) => 'image' in v))).toBe(true);
    },
    TRAINS,
  );

  it(
    "Ctrl-C (abort) stops at a step boundary and saves; resume continues bit for bit, and the final model carries the source model's sidecar files after the checkpoint it resumed from was pruned",
    async () => {
      // keep: 1 prunes the checkpoint the resumed run started from; pruning changes no number of the run.
      // Format 1 rebuilt a resumed policy from the checkpoint's model/ dir: once `keep` pruned that dir,
      // the final export silently lost the files that say how the model was trained.
      const cfg = config('abort', { checkpoint: { every: 1, keep: 1 } });
      const ac = new AbortController();
      const err = await train(cfg, {
        ...quiet,
        signal: ac.signal,
        onStep: (m) => (m.step === 1 ? ac.abort() : undefined),
      }).catch((e) => e);
      expect(err).toBeInstanceOf(AbortedError);
      expect(latestCheckpoint(cfg.out)?.state.step).toBe(1);
      expect(readMetrics(cfg.out)).toHaveLength(1);
      const res = await train(cfg, { ...quiet, resume: true });
      expect(res.steps).toBe(3);
      expect(stable(readMetrics(cfg.out))).toEqual(stable(reference));
      expect(weights(res.checkpoint!)).toBe(weights(refCkpt));
      tensorboardMatchesMetrics(cfg.out);
      expect(readdirSync(join(cfg.out, 'tensorboard'))).toHaveLength(2);
      expect(readdirSync(join(cfg.out, 'checkpoints')).filter((d) => d.startsWith('step-'))).toEqual(['step-000003']);
      const card = (d: string) => readFileSync(join(d, 'preprocessor_config.json'), 'utf8');
      expect(card(join(res.checkpoint!, 'policy', 'model'))).toBe(card(modelDir));
    },
    TRAINS,
  );

  it(
    'a sidecar killed mid-run is restarted from the latest checkpoint and the run matches',
    async () => {
      const cfg = config('killed');
      let killed = false;
      const res = await train(cfg, {
        ...quiet,
        onStep: (m, { sidecar }) => {
          if (m.step === 2 && !killed) {
            killed = true;
            process.kill(sidecar.pid!, 'SIGKILL'); // dies before step 2's checkpoint is written
          }
        },
      });
      expect(killed).toBe(true);
      expect(res.restarts).toBe(1);
      expect(stable(readMetrics(cfg.out))).toEqual(stable(reference));
      expect(weights(res.checkpoint!)).toBe(weights(refCkpt));
      // Step 2 was logged, then lost with the sidecar and recomputed: TensorBoard shows it once, the new value.
      tensorboardMatchesMetrics(cfg.out);
    },
    TRAINS,
  );
});

describe('train(): bad input', () => {
  it(
    'a NaN reward is a typed error naming the source, step and item; completed steps are saved, nothing half-written',
    async () => {
      const cfg = config('nan', { checkpoint: { every: 0, keep: 0 } });
      let calls = 0;
      const err = await train(cfg, {
        ...quiet,
        undReward: () => (++calls > 8 ? NaN : calls % 2), // step 1 uses 8 answers; step 2 gets NaN
      }).catch((e) => e);
      expect(err).toBeInstanceOf(RewardError);
      expect([err.reason, err.step, err.item]).toEqual(['non_finite', 1, 0]);
      expect(err.message).toMatch(
        /reward 'und\/reward' \(built-in accuracy, understanding\) at step 1: item 0 \(pair p\d, question "What colour is the square\?"\) scored NaN/,
      );
      expect(latestCheckpoint(cfg.out)?.state.step).toBe(1);
      expect(readMetrics(cfg.out).map((m) => m.step)).toEqual([1]);
      expect(readdirSync(join(cfg.out, 'checkpoints')).filter((n) => n.includes('tmp'))).toEqual([]);
    },
    TRAINS,
  );

  it(
    'a missing model, a missing reward checkpoint and a broken PairUG file fail before anything is written',
    async () => {
      const noModel = config('no-model', { model: { path: join(dir, 'nope'), device: 'cpu' } });
      const e1 = await train(noModel, quiet).catch((e) => e);
      expect(e1).toBeInstanceOf(SidecarError);
      expect(e1.code).toBe('not_found');
      expect(existsSync(noModel.out)).toBe(false);

      const noHps = config('no-hps', {
        gen: { k: 4, reward: { name: 'hps', config: { checkpoint: join(dir, 'HPS_v2.1_compressed.pt') } } },
      });
      const e2 = await train(noHps, quiet).catch((e) => e);
      expect(e2).toBeInstanceOf(SidecarError);
      expect(e2.message).toMatch(/HPS_v2\.1_compressed\.pt/);
      expect(existsSync(noHps.out)).toBe(false);

      const broken = join(dir, 'data', 'broken.jsonl');
      writeFileSync(broken, readFileSync(dataFile, 'utf8').replace('images/3.png', 'images/missing.png'));
      const e3 = await train(config('broken', { data: broken }), quiet).catch((e) => e);
      expect(e3.constructor.name).toBe('DataError');
      expect(e3.row).toBe(4);
      expect(existsSync(join(dir, 'broken'))).toBe(false);
    },
    TRAINS,
  );

  it('an out that is an existing file is refused at once, by name, before a sidecar starts', async () => {
    const file = join(dir, 'scratch.jsonl');
    writeFileSync(file, '{}\n');
    const t = spawnTracked();
    try {
      const err = await train(config('x', { out: file }), { ...quiet, spawn: t.spawn }).catch((e) => e);
      expect(err).toBeInstanceOf(RunStateError);
      expect(err.message).toContain(`cannot use out ${file} as the run directory: it is a file`);
      expect(t.spawned).toHaveLength(0); // refused before the slow part: no sidecar was started
      expect(readFileSync(file, 'utf8')).toBe('{}\n');
    } finally {
      await t.closeAll();
    }
  });

  it(
    'a failure after the sidecar started still closes it (the out dir taken away while it loads)',
    async () => {
      const cfg = config('taken');
      const t = spawnTracked(() => writeFileSync(cfg.out, 'not a directory'));
      try {
        const err = await train(cfg, { ...quiet, spawn: t.spawn }).catch((e) => e);
        expect(err).toBeInstanceOf(RunStateError);
        expect(err.message).toContain(cfg.out);
        expect(t.spawned).toHaveLength(1);
        expect(t.spawned[0].alive).toBe(false);
        expect(processGone(t.spawned[0].pid!)).toBe(true);
      } finally {
        await t.closeAll();
      }
    },
    TRAINS,
  );

  it(
    'a checkpoint write killed mid-way leaves its temp dir; the next start of the run removes it',
    async () => {
      // What SIGKILL during writeCheckpoint leaves: a full copy of a checkpoint under its temp name.
      const cfg = config('ref', { steps: 3 });
      const dead = spawnSync(process.execPath, ['-e', '']).pid!;
      const tmp = join(cfg.out, 'checkpoints', `.tmp-step-000004-${dead}`);
      cpSync(join(cfg.out, 'checkpoints', 'step-000003'), tmp, { recursive: true });
      mkdirSync(join(tmp, 'policy', `.policy.tmp-${dead}-0badc0de`)); // the sidecar's own temp, inside it
      const lines: string[] = [];
      const res = await train(cfg, { onLog: (l) => lines.push(l), resume: true });
      expect(res.steps).toBe(3);
      expect(existsSync(tmp)).toBe(false);
      expect(lines.join('\n')).toContain(`removed ${tmp}`);
      expect(readdirSync(join(cfg.out, 'checkpoints')).filter((n) => n.startsWith('.'))).toEqual([]);
    },
    TRAINS,
  );

  it('refuses to overwrite a run, to resume nothing, or to resume with changed math', async () => {
    await expect(train(config('ref'), quiet)).rejects.toBeInstanceOf(RunStateError);
    await expect(train(config('ref'), quiet)).rejects.toThrow(
      /already holds a run .*; pass `resume: true` to continue it, or choose another `out`$/,
    );
    await expect(train(config('fresh'), { ...quiet, resume: true })).rejects.toThrow(/nothing to resume/);
    await expect(
      train(config('ref', { optim: { lr: 1e-2, microBatch: 16 } }), { ...quiet, resume: true }),
    ).rejects.toBeInstanceOf(ConfigError);
  });
});

describe('pairuni train (CLI)', () => {
  it(
    'trains from a config file and resumes with --resume',
    async () => {
      const cfgFile = join(dir, 'run.json');
      writeFileSync(
        cfgFile,
        JSON.stringify({
          data: 'data/pairs.jsonl',
          out: 'cli-run',
          model: { path: 'tiny', device: 'cpu' },
          steps: 2,
          batchPairs: 2,
          mode: 'vanilla',
          und: { k: 2, maxNewTokens: 4 },
          gen: { k: 2, reward: { name: 'brightness' } },
          optim: { lr: 1e-3 },
          checkpoint: { every: 1 },
          sidecar: { threads: 1 },
        }),
      );
      expect(await cli(['--config', cfgFile, '--steps', '1', '--quiet'])).toBe(0);
      expect(await cli(['--config', cfgFile, '--resume', '--quiet'])).toBe(0);
      expect(readMetrics(join(dir, 'cli-run')).map((m) => m.step)).toEqual([1, 2]);
      await expect(cli(['--bogus'])).rejects.toMatchObject({ code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION' }); // worded once, in src/cli/index.ts (tests/ts/cli)
    },
    TRAINS,
  );

  it('speaks in flags: --resume / --out in its messages, docs/training.md for the config keys', async () => {
    const cfgFile = join(dir, 'run.json'); // written by the test above; cli-run holds a finished run
    const err = await cli(['--config', cfgFile, '--quiet']).catch((e) => e);
    expect(err).toBeInstanceOf(RunStateError);
    expect(err.message).toMatch(
      /cli-run already holds a run .*; pass --resume to continue it, or choose another --out$/,
    );
    const e2 = await cli(['--config', cfgFile, '--quiet', '--resume', '--out', join(dir, 'cli-fresh')]).catch((e) => e);
    expect(e2.message).toMatch(
      /nothing to resume: .*cli-fresh has no complete checkpoint \(leave out --resume to start a new run there\)/,
    );
    const file = join(dir, 'data', 'pairs.jsonl');
    const e3 = await cli(['--config', cfgFile, '--quiet', '--out', file]).catch((e) => e);
    expect(e3.message).toMatch(
      /pairs\.jsonl as the run directory: it is a file, not a directory; choose another --out$/,
    );
    const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    try {
      expect(await cli(['--help'])).toBe(0);
      const help = log.mock.calls.flat().join('\n');
      expect(help).toMatch(/"Config keys" in the package's docs\/training\.md/);
      expect(help).not.toMatch(/src\/train/);
    } finally {
      log.mockRestore();
    }
  });

  it(
    'Ctrl-C while the sidecar starts: exit 130 in one line, nothing written; a second Ctrl-C later quits at once and leaves no socket dir',
    async () => {
      const cfgFile = join(dir, 'ctrl-c.json');
      writeFileSync(
        cfgFile,
        JSON.stringify({
          data: 'data/pairs.jsonl',
          out: 'ctrl-c-run',
          model: { path: 'tiny', device: 'cpu' },
          steps: 1000,
          batchPairs: 2,
          mode: 'vanilla',
          und: { k: 2, maxNewTokens: 4 },
          gen: { k: 2, reward: { name: 'brightness' } },
          optim: { lr: 1e-3 },
          checkpoint: { every: 1 },
          sidecar: { threads: 1 },
        }),
      );
      const out = join(dir, 'ctrl-c-run');
      // The child's own TMPDIR: where Sidecar.spawn makes its socket dir (pairuni-XXXXXX).
      const tmp = mkdtempSync(join(dir, 'ctrl-c-tmp-'));
      const socketDirs = () => readdirSync(tmp).filter((f) => f.startsWith('pairuni-'));

      // 1. SIGINT to the whole process group (as a terminal sends it) as soon as the sidecar process exists,
      //    i.e. before it has imported torch and could ignore SIGINT.
      const first = cliProcess(tmp, '--config', cfgFile, '--quiet');
      const starting = await first.sidecarPid();
      first.interrupt();
      const r1 = await first.exit;
      expect(r1.stderr).not.toMatch(
        /Traceback|KeyboardInterrupt|SidecarStartError|exited before saying hello|\n\s+at /,
      );
      expect(r1.stderr.trim().split('\n')).toEqual([
        'pairuni train: stopping after this step (Ctrl-C again to quit at once)',
        'pairuni train: training stopped at step 0/1000 while the sidecar started; nothing saved yet',
      ]);
      expect(r1.code).toBe(130);
      expect(processGone(starting)).toBe(true);
      expect(socketDirs()).toEqual([]);
      expect(existsSync(out)).toBe(false); // nothing to clean up: the same command starts the run

      // 2. The same command trains; Ctrl-C during a step, then Ctrl-C again: exit at once, sidecar and socket dir gone.
      const second = cliProcess(tmp, '--config', cfgFile, '--quiet');
      const sidecar = await second.sidecarPid();
      while (!(
        existsSync(join(out, 'metrics.jsonl')) && readFileSync(join(out, 'metrics.jsonl'), 'utf8').includes('\n')
      ))
        await pause(20);
      second.interrupt();
      await second.stderrHas('Ctrl-C again to quit at once');
      second.interrupt();
      const r2 = await second.exit;
      expect(r2.code).toBe(130);
      expect(socketDirs()).toEqual([]);
      while (!processGone(sidecar)) await pause(20); // SIGKILLed by the exit hook; its new parent reaps it
      expect(readMetrics(out).length).toBeGreaterThanOrEqual(1);
      rmSync(tmp, { recursive: true, force: true });
    },
    TRAINS,
  );
});

const RUNNER = fileURLToPath(new URL('../cli/_run.ts', import.meta.url));
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

/** `pairuni train ...` as a user runs it: its own process group (Ctrl-C goes to the group), TMPDIR `tmp`. */
function cliProcess(tmp: string, ...argv: string[]) {
  const child = spawn(process.execPath, ['--import', TSX, RUNNER, 'train', ...argv], {
    cwd: dir,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TMPDIR: tmp },
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const exit = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stdout, stderr })),
  );
  let done = false;
  void exit.then(() => (done = true));
  return {
    exit,
    interrupt: () => process.kill(-child.pid!, 'SIGINT'),
    /** Polls for the sidecar this run spawned (`--parent-pid <its pid>` on the command line). */
    async sidecarPid(): Promise<number> {
      for (;;) {
        for (const p of readdirSync('/proc').filter((f) => /^\d+$/.test(f))) {
          let cmd: string[];
          try {
            cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
          } catch {
            continue; // gone meanwhile
          }
          if (cmd.includes('pairuni_sidecar') && cmd[cmd.indexOf('--parent-pid') + 1] === String(child.pid))
            return Number(p);
        }
        if (done) throw new Error(`pairuni train exited before it started a sidecar: ${stderr}`);
        await pause(10);
      }
    },
    async stderrHas(text: string): Promise<void> {
      while (!stderr.includes(text)) {
        if (done) throw new Error(`pairuni train exited without printing '${text}': ${stderr}`);
        await pause(10);
      }
    },
  };
}
