/**
 * `loggers` (docs/training.md#experiment-sinks): a tiny Janus run through real sidecars logs to W&B
 * (offline) and MLflow (file store) through the tracker child process, stopped and resumed into the
 * same runs; read back with W&B's own records and MlflowClient (python_sidecar/pairuni_sidecar/sinks/read.py),
 * the trackers hold exactly metrics.jsonl's and eval.jsonl's rows. The child dying mid-run is a
 * SinkError, the run stops at that step's boundary with a checkpoint, and the resume sends the missed step.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortedError, ConfigError, SinkError } from '../../../src/errors.js';
import { Sidecar } from '../../../src/sidecar/index.js';
import { resolvePython, sidecarSourceDir } from '../../../src/sidecar/python.js';
import { buildTinyJanus, writeTinyPairUG } from '../../../src/train/fixtures.js';
import {
  isTrackerLogger,
  latestCheckpoint,
  type LoggerState,
  PythonSinks,
  parseTrainConfig,
  readEvals,
  readMetrics,
  train,
} from '../../../src/train/index.js';

const SLOW = 900_000;
let dir: string;
let modelDir: string;
let dataFile: string;
let heldFile: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pairuni-loggers-'));
  const sc = await Sidecar.spawn({ threads: 1 });
  try {
    modelDir = await buildTinyJanus(sc, join(dir, 'tiny'));
  } finally {
    await sc.close();
  }
  dataFile = writeTinyPairUG(join(dir, 'data'), 6);
  heldFile = writeTinyPairUG(join(dir, 'held'), 4, 1);
}, SLOW);
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const config = (out: string, over: Record<string, unknown> = {}) =>
  parseTrainConfig({
    data: dataFile,
    out: join(dir, out),
    model: { path: modelDir, device: 'cpu' },
    steps: 3,
    batchPairs: 2,
    und: { k: 2, maxNewTokens: 4 },
    gen: { k: 2, reward: { name: 'brightness' } },
    optim: { lr: 1e-3, microBatch: 16 },
    log: { sampleEvery: 2 },
    loggers: ['jsonl', 'tensorboard', 'wandb', 'mlflow'],
    eval: { every: 2, data: heldFile, samples: 2 },
    checkpoint: { every: 1, keep: 0 },
    sidecar: { threads: 1 },
    ...over,
  });

type Row = Record<string, number | string>;
interface ReadBack {
  wandb?: Array<{ id: string; history: Row[] }>;
  mlflow?: { status: string; metrics: Record<string, Array<[number, number]>>; artifacts: string[] };
}

/** What the trackers hold, read with their own formats and client (pairuni_sidecar.sinks.read). */
function readBack(out: string, mlflowRunId?: string, wandb = true): ReadBack {
  const args = ['-m', 'pairuni_sidecar.sinks.read'];
  if (wandb) args.push('--wandb', join(out, 'wandb'));
  if (mlflowRunId) args.push('--mlflow', `file:${join(out, 'mlruns')}`, mlflowRunId);
  const r = spawnSync(resolvePython(), args, {
    encoding: 'utf8',
    env: { ...process.env, PYTHONPATH: sidecarSourceDir() },
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as ReadBack;
}

const state = (out: string) => JSON.parse(readFileSync(join(out, 'loggers.json'), 'utf8')) as LoggerState;

/** The run directory's scalars, `{ step: { key: value } }`: metrics.jsonl's rows and eval.jsonl's. */
function recorded(out: string): Map<number, Record<string, number>> {
  const rows = new Map<number, Record<string, number>>();
  for (const { step, ...s } of [...readMetrics(out), ...readEvals(out)])
    rows.set(step, { ...rows.get(step), ...(s as Record<string, number>) });
  return new Map([...rows].sort(([a], [b]) => a - b));
}

describe('loggers', () => {
  it('is checked by name, each mistake naming its entry', () => {
    const bad = (loggers: unknown, over: Record<string, unknown> = {}) => {
      let err: unknown;
      try {
        config('x', { loggers, ...over });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      return (err as Error).message;
    };
    expect(bad(['jsonl', 'wandbb'])).toMatch(
      /loggers\.1: unknown logger "wandbb" \(takes jsonl, tensorboard, wandb, mlflow, or an object \{ type, \.\.\.options \}\)/,
    );
    expect(bad([{ type: 'wandb', mode: 'cloud' }])).toMatch(/loggers\.0\.mode: Invalid option/);
    expect(bad([{ type: 'mlflow', uri: 'x' }])).toMatch(/loggers\.0: Unrecognized key: "uri"/);
    expect(bad(['mlflow', { type: 'mlflow' }])).toMatch(/loggers\.1: 'mlflow' is listed twice/);
    expect(bad('wandb')).toMatch(/loggers: expected a list of trackers/);
    expect(bad(['wandb'], { log: { tensorboard: true } })).toMatch(
      /log\.tensorboard: true disagrees with loggers, which leaves out 'tensorboard' \(give one of the two\)/,
    );
    // resolved: jsonl always first, the trackers' files in the run directory; unset: jsonl and log.tensorboard
    const out = join(dir, 'x');
    expect(config('x', { loggers: ['tensorboard', 'wandb', 'mlflow'] }).loggers).toEqual([
      { type: 'jsonl' },
      { type: 'tensorboard' },
      { type: 'wandb', project: 'pairuni', mode: 'offline', dir: out },
      { type: 'mlflow', experiment: 'pairuni', trackingUri: `file:${join(out, 'mlruns')}` },
    ]);
    const plain = config('x', { loggers: undefined, log: { tensorboard: false } });
    expect([plain.loggers, plain.log.tensorboard]).toEqual([[{ type: 'jsonl' }], false]);
    expect(config('x', { loggers: ['wandb'], log: { tensorboard: false } }).log.tensorboard).toBe(false);
  });

  it('a step redone after a restart is not sent again, and W&B’s refusal of an earlier step is said', async () => {
    const out = join(dir, 'redo');
    mkdirSync(out);
    const lines: string[] = [];
    const notices: string[] = [];
    const wandb = config('redo', { loggers: ['wandb'] }).loggers!.filter(isTrackerLogger);
    const sinks = new PythonSinks(wandb, { onLine: (l) => lines.push(l), onNotice: (t) => notices.push(t) });
    const run = { out, config: config('redo'), resumed: false, step: 0 };
    try {
      await sinks.start(run);
      await sinks.log(1, { loss: 0.5 });
      await sinks.log(2, { loss: 0.25 });
      // the trainer restarts from a checkpoint at step 1 and redoes step 2
      await sinks.start({ ...run, resumed: true, step: 1 });
      await sinks.log(2, { loss: 0.25 });
      expect(notices).toEqual(['wandb has loss up to step 2; step 2 is not sent again']);
      // a key the run never logged, at a step below W&B's: W&B would drop it silently, the child says so
      await sinks.log(1, { other: 1 });
    } finally {
      await sinks.close();
    }
    expect(lines.join('\n')).toMatch(
      /\] warn: wandb: scalars at step 1 not logged: the run is at step 2 and W&B takes steps in increasing order only/,
    );
    const [wb] = readBack(out).wandb!;
    expect(wb.history.map((h) => [h._step, h.loss])).toEqual([
      [1, 0.5],
      [2, 0.25],
    ]);
  });

  it(
    'W&B and MLflow hold exactly the run directory’s rows, across a stop and a resume, in the same runs',
    async () => {
      const cfg = config('run');
      const stop = new AbortController();
      const err = await train(cfg, {
        signal: stop.signal,
        onLog: () => undefined,
        onStep: (m) => {
          if (m.step === 1) stop.abort();
        },
      }).catch((e) => e);
      expect(err).toBeInstanceOf(AbortedError);
      const first = state(cfg.out).runs;
      await train(cfg, { resume: true, onLog: () => undefined });
      const { runs, last } = state(cfg.out);
      expect(runs).toEqual(first);
      expect(existsSync(join(cfg.out, 'tensorboard'))).toBe(true);

      const rows = recorded(cfg.out);
      expect([...rows.keys()].sort()).toEqual([0, 1, 2, 3]); // eval at 0, 2, 3; steps 1..3
      expect(last.wandb!.loss).toBe(3);
      expect(last.mlflow!['eval/und_acc']).toBe(3);
      const read = readBack(cfg.out, runs.mlflow!.runId);

      // W&B offline: the resume wrote a second run directory under the same run id
      expect(read.wandb!.map((r) => r.id)).toEqual([runs.wandb!.id, runs.wandb!.id]);
      const history = new Map<number, Row>();
      for (const r of read.wandb!)
        for (const { _step, ...h } of r.history) {
          const at = Number(_step);
          for (const k of Object.keys(h)) expect(history.get(at)?.[k], `step ${at} ${k} logged twice`).toBeUndefined();
          history.set(at, { ...history.get(at), ...h });
        }
      expect([...history.keys()].sort()).toEqual([0, 1, 2, 3]);
      for (const [step, s] of rows) {
        const h = history.get(step)!;
        for (const [k, v] of Object.entries(s)) expect(h[k], `W&B step ${step} ${k}`).toBe(v);
      }
      for (const step of [0, 2, 3]) {
        expect(history.get(step)!['eval/samples/_type']).toBe('table-file');
        expect(history.get(step)!['eval/samples/nrows']).toBe(4); // 2 answers and 2 images
      }
      expect(history.get(2)!['samples/gen/_type']).toBe('image-file');

      // MLflow: one run, every key's history the run directory's values, each step once
      const ml = read.mlflow!;
      expect(ml.status).toBe('FINISHED');
      const keys = new Set([...rows.values()].flatMap((s) => Object.keys(s)));
      expect(Object.keys(ml.metrics).sort()).toEqual([...keys].sort());
      for (const k of keys) {
        const want = [...rows].filter(([, s]) => k in s).map(([step, s]) => [step, s[k]]);
        expect(ml.metrics[k], k).toEqual(want);
      }
      expect(ml.artifacts.sort()).toEqual([
        'eval/samples/step-000000.json',
        'eval/samples/step-000002.json',
        'eval/samples/step-000003.json',
        'samples/gen/step-000002.png',
      ]);
      const mlruns = join(cfg.out, 'mlruns');
      const experiments = readdirSync(mlruns).filter((d) => /^\d+$/.test(d) && d !== '0');
      expect(experiments.map((e) => readdirSync(join(mlruns, e)).filter((d) => d !== 'meta.yaml'))).toEqual([
        [runs.mlflow!.runId],
      ]);
    },
    SLOW,
  );

  it(
    'a tracker process that dies is a SinkError; the run stops with its checkpoint and the resume sends the missed step',
    async () => {
      const cfg = config('dead', { loggers: ['mlflow'], steps: 2, eval: { every: 0 }, log: { sampleEvery: 0 } });
      const err = await train(cfg, {
        onLog: () => undefined,
        onStep: (m) => {
          // the tracker child of this process (by its parent pid and command line), killed after step 1 is logged
          if (m.step === 1) process.kill(trackerChild(), 'SIGKILL');
        },
      }).catch((e) => e);
      expect(err).toBeInstanceOf(SinkError);
      expect([err.sink, err.what]).toEqual(['sinks', 'log']);
      expect(err.message).toMatch(/the tracker process \(.* -m pairuni_sidecar\.sinks\) exited \(signal SIGKILL\)/);
      expect(latestCheckpoint(cfg.out)!.state.step).toBe(2);
      expect(readMetrics(cfg.out).map((m) => m.step)).toEqual([1, 2]);
      expect(state(cfg.out).last.mlflow!.loss).toBe(1);

      await train(cfg, { resume: true, onLog: () => undefined });
      const ml = readBack(cfg.out, state(cfg.out).runs.mlflow!.runId, false).mlflow!;
      const rows = readMetrics(cfg.out);
      expect(ml.metrics.loss).toEqual(rows.map((m) => [m.step, (m as unknown as Row).loss]));
    },
    SLOW,
  );
});

/** The pid of this process's `python -m pairuni_sidecar.sinks` child. */
function trackerChild(): number {
  const pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  const mine = pids.filter((p) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      return ppid === process.pid && readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('pairuni_sidecar.sinks');
    } catch {
      return false; // exited meanwhile
    }
  });
  expect(mine).toHaveLength(1);
  return Number(mine[0]);
}
