/**
 * Evaluation during training (`eval` in the config) on a tiny Janus through real sidecars: held-out
 * accuracy and generation reward at step 0, every N steps and at the end, logged as `eval/...` with a
 * sample table per evaluation; a run stopped and resumed evaluates each step exactly once, and a
 * user's experiment sink is told each step's metrics, each evaluation and its table, in order.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortedError, ConfigError } from '../../../src/errors.js';
import { Sidecar } from '../../../src/sidecar/index.js';
import { buildTinyJanus, writeTinyPairUG } from '../../../src/train/fixtures.js';
import { type ExperimentSink, parseTrainConfig, readEvals, readMetrics, train } from '../../../src/train/index.js';

const SLOW = 900_000;
let dir: string;
let modelDir: string;
let dataFile: string;
let heldFile: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pairuni-eval-'));
  const sc = await Sidecar.spawn({ threads: 1 });
  try {
    modelDir = await buildTinyJanus(sc, join(dir, 'tiny'));
  } finally {
    await sc.close();
  }
  dataFile = writeTinyPairUG(join(dir, 'data'), 6);
  heldFile = writeTinyPairUG(join(dir, 'held'), 4, 1);
}, SLOW);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

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
    log: { tensorboard: false, sampleEvery: 0 },
    eval: { every: 2, data: heldFile, samples: 3 },
    checkpoint: { every: 1, keep: 0 },
    sidecar: { threads: 1 },
    ...over,
  });

describe('evaluation during training', () => {
  it('is refused without held-out data, and with several ranks', () => {
    expect(() => config('x', { eval: { every: 1 } })).toThrow(ConfigError);
    expect(() => config('x', { eval: { every: 1 } })).toThrow(
      /eval\.data: evaluation every N steps \(eval\.every\) needs a held-out PairUG file/,
    );
    expect(() => config('x', { sidecar: { ranks: 2 } })).toThrow(
      /eval\.every: evaluation during training runs on one rank/,
    );
  });

  it(
    'runs at step 0, every N steps and at the end, once each across a stop and a resume, with its sample tables',
    async () => {
      const cfg = config('run');
      const stop = new AbortController();
      // a user's experiment sink records what it is told, in order
      const calls: string[] = [];
      const tables: Array<{ step: number; rows: number }> = [];
      const sink: ExperimentSink = {
        start: (r) => void calls.push(`start ${r.step} ${r.resumed}`),
        log: (step, sc) => void calls.push(`log ${step} ${'eval/und_acc' in sc ? 'eval' : 'train'}`),
        logTable: (step, name, rows) => {
          tables.push({ step, rows: rows.length });
          calls.push(`table ${step} ${name}`);
        },
        close: () => void calls.push('close'),
      };
      // stopped after step 1 (before the evaluation due at step 2), then resumed
      const err = await train(cfg, {
        signal: stop.signal,
        sinks: [sink],
        onLog: () => undefined,
        onStep: (m) => {
          if (m.step === 1) stop.abort();
        },
      }).catch((e) => e);
      expect(err).toBeInstanceOf(AbortedError);
      expect(readEvals(cfg.out).map((r) => r.step)).toEqual([0]);
      expect(calls).toEqual(['start 0 false', 'log 0 eval', 'table 0 eval/samples', 'log 1 train', 'close']);
      calls.length = 0;
      await train(cfg, { resume: true, sinks: [sink], onLog: () => undefined });
      expect(calls).toEqual([
        'start 1 true',
        'log 2 train',
        'log 2 eval',
        'table 2 eval/samples',
        'log 3 train',
        'log 3 eval',
        'table 3 eval/samples',
        'close',
      ]);
      expect(tables.map((t) => t.rows)).toEqual([6, 6, 6]); // 3 answers and 3 images each
      // every 2 steps of 3: steps 0, 2 and the last (3), each once
      const evals = readEvals(cfg.out);
      expect(evals.map((r) => r.step)).toEqual([0, 2, 3]);
      expect(readMetrics(cfg.out).map((m) => m.step)).toEqual([1, 2, 3]);

      for (const e of evals) {
        const rows = readFileSync(join(cfg.out, 'eval', `step-${String(e.step).padStart(6, '0')}.jsonl`), 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l));
        const und = rows.filter((r) => r.side === 'und');
        const gen = rows.filter((r) => r.side === 'gen');
        expect(und.map((r) => r.pair_id)).toEqual(['p0', 'p1', 'p2']); // the first `samples` held-out pairs
        expect(gen.map((r) => r.pair_id)).toEqual(['p0', 'p1', 'p2']);
        // the scalars are the table's means
        expect(e['eval/und_acc']).toBeCloseTo(und.filter((r) => r.correct).length / 3, 10);
        expect(e['eval/gen_reward']).toBeCloseTo(gen.reduce((a, r) => a + r.reward, 0) / 3, 6);
        for (const r of gen) {
          expect(existsSync(join(cfg.out, r.image))).toBe(true);
          expect(r.reward).toBeGreaterThan(0); // brightness of a real image
        }
      }
    },
    SLOW,
  );
});
