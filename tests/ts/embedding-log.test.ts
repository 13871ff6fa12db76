/**
 * Embedding: a logger passed to `Sidecar.spawn` and `train` receives every line a training run prints
 * (the sidecar's own lines, lines Python libraries write to its stderr and stdout, the trainer's
 * notices), each at a level, and nothing reaches this process's stdout or stderr.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it, vi } from 'vitest';
import { buildPairUG } from '../../src/pairing/pipeline.js';
import { resolvePython, Sidecar } from '../../src/sidecar/index.js';
import { writeTinyPairUG } from '../../src/train/fixtures.js';
import { train } from '../../src/train/index.js';
import type { Logger } from '../../src/util/log.js';
import { tinySet } from './pairing/_data.js';

let dir: string;
let modelDir: string;
let dataFile: string;
let pluginDir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'pairuni-embed-log-'));
  modelDir = join(dir, 'tiny');
  const r = spawnSync(resolvePython(), ['-m', 'pairuni_sidecar.adapters.tiny', modelDir], {
    env: { ...process.env, PYTHONPATH: join(process.cwd(), 'python_sidecar') },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`building the tiny model failed: ${r.stderr}`);
  dataFile = writeTinyPairUG(join(dir, 'data'), 4);
  // A plug-in that, like many Python libraries, writes to stderr and stdout and warns when imported.
  pluginDir = join(dir, 'plugins');
  mkdirSync(pluginDir);
  writeFileSync(
    join(pluginDir, 'noisy_plugin.py'),
    [
      'import sys, warnings',
      'from pairuni_sidecar import log',
      'print("noisy_plugin: to stderr", file=sys.stderr, flush=True)',
      'print("noisy_plugin: to stdout", flush=True)',
      'warnings.warn("noisy_plugin: a warning")',
      'log.warn("noisy_plugin: through the log helper\\nsecond line")',
      '',
    ].join('\n'),
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

/** A logger that records each call's level and message (the extra arguments appended). */
function capture(): { logger: Logger; got: Array<{ level: string; message: string }> } {
  const got: Array<{ level: string; message: string }> = [];
  const at =
    (level: string) =>
    (message: string, ...args: unknown[]) =>
      void got.push({ level, message: [message, ...args].join(' ') });
  return { got, logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } };
}

it('a logger given to Sidecar.spawn and train receives every line of the run, at a level; nothing reaches stdout/stderr', async () => {
  const { logger, got } = capture();
  const out = join(dir, 'run');
  // What a killed checkpoint write leaves (this process's pid: stale), so that the trainer has a notice to give.
  const stale = join(out, 'checkpoints', `.tmp-step-000009-${process.pid}`);
  mkdirSync(stale, { recursive: true });

  const stdout = vi.spyOn(process.stdout, 'write');
  const stderr = vi.spyOn(process.stderr, 'write');
  let sc: Sidecar | undefined;
  const res = await train(
    {
      data: dataFile,
      out,
      model: { path: modelDir, device: 'cpu' },
      steps: 1,
      batchPairs: 2,
      und: { k: 2, maxNewTokens: 4 },
      gen: { k: 2, reward: { name: 'brightness' } },
      optim: { lr: 1e-3, microBatch: 16 },
      sidecar: { threads: 1 },
    },
    {
      logger,
      logLevel: 'debug',
      spawn: async () =>
        (sc = await Sidecar.spawn({
          threads: 1,
          plugins: ['noisy_plugin'],
          env: { PYTHONPATH: pluginDir },
          logger,
          logLevel: 'debug',
        })),
    },
  );
  const writes = [...stdout.mock.calls, ...stderr.mock.calls].map((c) => String(c[0]));
  expect(writes).toEqual([]);
  expect(res.steps).toBe(1);

  const levels = new Set(['debug', 'info', 'warn', 'error']);
  expect(got.every((g) => levels.has(g.level))).toBe(true);
  const find = (re: RegExp) => got.filter((g) => re.test(g.message));
  // The sidecar's own start line, through its log helper, at the level it gave it.
  expect(find(/^\[pairuni-sidecar \d+ [\d.]+\] debug: rank 0\/1 starting \(torch /).map((g) => g.level)).toEqual([
    'debug',
  ]);
  // Lines the sidecar did not write through its helper (here a plug-in's) arrive at debug: stderr, stdout, a Python warning.
  expect(find(/^noisy_plugin: to stderr$/).map((g) => g.level)).toEqual(['debug']);
  expect(find(/^noisy_plugin: to stdout$/).map((g) => g.level)).toEqual(['debug']);
  expect(find(/UserWarning: noisy_plugin: a warning$/).map((g) => g.level)).toEqual(['debug']);
  // A plug-in's message through the sidecar's log helper: its level, on each of its lines.
  expect(
    find(/^\[pairuni-sidecar \d+ [\d.]+\] warn: (noisy_plugin: through the log helper|second line)$/).map(
      (g) => g.level,
    ),
  ).toEqual(['warn', 'warn']);
  // The trainer's own notice.
  expect(find(/^pairuni train: removed .*\.tmp-step-000009-/).map((g) => g.level)).toEqual(['info']);
  // Every line the sidecar wrote (its last lines, kept for error messages) reached the logger.
  const sidecarLines = sc!.logTail.split('\n').filter(Boolean);
  expect(sidecarLines.length).toBeGreaterThanOrEqual(4);
  expect(sidecarLines.filter((l) => !got.some((g) => g.message === l))).toEqual([]);
}, 900_000);

it('buildPairUG hands the lines of the sidecar it starts to its logger; nothing reaches stdout/stderr', async () => {
  const s = tinySet(8, 8);
  const { logger, got } = capture();
  const stdout = vi.spyOn(process.stdout, 'write');
  const stderr = vi.spyOn(process.stderr, 'write');
  const r = await buildPairUG({
    understanding: s.u,
    generation: s.g,
    out: join(s.dir, 'out'),
    cacheDir: join(s.dir, 'cache'),
    backbone: { kind: 'pixels', size: 8 },
    config: { kmeans: { k: 2, batchSize: 16 }, threshold: 0.5, topN: 2 },
    logger,
    logLevel: 'debug',
  });
  expect([...stdout.mock.calls, ...stderr.mock.calls].map((c) => String(c[0]))).toEqual([]);
  expect(r.records.length).toBeGreaterThan(0);
  expect(
    got.filter((g) => /^\[pairuni-sidecar \d+ [\d.]+\] debug: rank 0\/1 starting /.test(g.message)).map((g) => g.level),
  ).toEqual(['debug']);
}, 300_000);
