/**
 * Reward sources (docs/training.md#reward-sources) on a tiny Janus through a real sidecar: a TS
 * callback and the reference reward server (examples/reward_server.py on loopback, wrapping the
 * `brightness` plug-in) give the advantages the plug-in gives on one fixed rollout; a weighted sum
 * equals the hand computation; a NaN score, a short reply and a server that never answers are
 * RewardErrors naming the source, the step and the item, and the run stops with a resumable checkpoint.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, RewardError } from '../../../src/errors.js';
import { sideAdvantages } from '../../../src/grpo/index.js';
import { resolvePython, Sidecar } from '../../../src/sidecar/index.js';
import { buildTinyJanus, writeTinyPairUG } from '../../../src/train/fixtures.js';
import {
  type GenRewardBatch,
  type GenRewardInputs,
  latestCheckpoint,
  loadArgs,
  loadPairUG,
  parseTrainConfig,
  readMetrics,
  type RewardCallback,
  scoreSide,
  sidecarGenInputs,
  train,
  type TrainPair,
} from '../../../src/train/index.js';

const K = 4;
/** Starting sidecars and training on a busy machine is slow; a hang still fails. */
const SLOW = 900_000;

let dir: string;
let sc: Sidecar;
let modelDir: string;
let dataFile: string;
let pairs: TrainPair[];
let refServer: ChildProcess | undefined;
let refUrl: string;
const servers: Server[] = [];

/** brightness in TS: mean of the image's bytes / 255 (the `brightness` plug-in's formula). */
const bright: RewardCallback = (b) => {
  const { images } = b as GenRewardBatch;
  const [n, h, w, c] = images.shape;
  const per = h * w * c;
  const px = images.bytes;
  return Float32Array.from({ length: n }, (_, i) => {
    let s = 0;
    for (let j = i * per; j < (i + 1) * per; j++) s += px[j];
    return s / per / 255;
  });
};

/** What a fake server received: each request's JSON header and Authorization header. */
const received: Array<{ head: { side: string; step: number; items: Array<Record<string, unknown>> }; auth?: string }> =
  [];

/** A loopback server answering every request with `answer(items)` (or never, when it returns undefined). */
async function fakeServer(answer: (n: number) => unknown): Promise<string> {
  const s = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const head = JSON.parse(
        body.subarray(4, 4 + body.readUInt32LE(0)).toString('utf8'),
      ) as (typeof received)[number]['head'];
      received.push({ head, auth: req.headers.authorization });
      const reply = answer(head.items.length);
      if (reply === undefined) return; // hangs: never answers
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(reply));
    });
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}/`;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pairuni-rewards-'));
  refServer = spawn(resolvePython(), ['examples/reward_server.py', '--reward', 'brightness', '--port', '0'], {
    env: { ...process.env, PYTHONPATH: join(process.cwd(), 'python_sidecar'), OMP_NUM_THREADS: '1' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ready = createInterface({ input: refServer.stdout! })[Symbol.asyncIterator]().next();
  sc = await Sidecar.spawn({ threads: 1 });
  modelDir = await buildTinyJanus(sc, join(dir, 'tiny'));
  dataFile = writeTinyPairUG(join(dir, 'data'), 6);
  pairs = loadPairUG(dataFile);
  const line = (await ready).value as string;
  refUrl = /listening on (\S+)/.exec(line)![1];
}, SLOW);
afterAll(async () => {
  refServer?.kill();
  for (const s of servers) (s.closeAllConnections(), s.close());
  await sc?.close();
  rmSync(dir, { recursive: true, force: true });
});

const config = (out: string, over: Record<string, unknown> = {}) =>
  parseTrainConfig({
    data: dataFile,
    out: join(dir, out),
    model: { path: modelDir, device: 'cpu' },
    steps: 2,
    batchPairs: 2,
    und: { k: K, maxNewTokens: 4 },
    gen: { k: K, reward: { name: 'brightness' } },
    optim: { lr: 1e-3, microBatch: 16 },
    log: { tensorboard: false, sampleEvery: 0 },
    checkpoint: { every: 0, keep: 0 },
    sidecar: { threads: 1 },
    ...over,
  });

describe('reward sources on one fixed rollout', () => {
  let inputs: GenRewardInputs;
  const norm = { std: 'unbiased' as const, eps: 1e-4 };
  const adv = (r: Float32Array) => Array.from(sideAdvantages(r, K, [1, 1], norm).adv);

  beforeAll(async () => {
    await sc.train.load(loadArgs(config('fixed')));
    const items = pairs.slice(0, 2);
    const g = await sc.train.genRollout({
      n: K,
      items: items.map((p) => ({ prompt: p.prompt })),
      sampling: { temperature: 1, cfgWeight: 5, logp: 'cfg', oldLogp: 'auto', options: {}, seed: 7 },
    });
    inputs = sidecarGenInputs(
      sc,
      [{ handle: g.args.handle, rank: 0 }],
      3,
      items.flatMap((p) => Array(K).fill(p)),
    );
  }, SLOW);

  it(
    "a TS callback and a loopback reward server give the plug-in's advantages",
    async () => {
      const plugin = await scoreSide({ name: 'brightness', config: {} }, inputs);
      const cb = await scoreSide({ callback: 'bright' }, inputs, { callbacks: { bright } });
      const remote = await scoreSide(
        config('x', { gen: { k: K, reward: { url: refUrl, batchSize: 3 } } }).gen.reward,
        inputs,
      );
      const a = adv(plugin.total);
      // the rollout is not degenerate: images differ within each group, so the advantages carry signal
      expect(a.some((x) => Math.abs(x) > 0.5)).toBe(true);
      // the server runs the plug-in itself (3 requests of ≤ 3 images): the same float32 scores
      expect(Array.from(remote.total)).toEqual(Array.from(plugin.total));
      expect(adv(remote.total)).toEqual(a);
      // the callback sums in float64, torch in float32: the scores agree to rounding, and the advantages
      // (those differences divided by a group's small std) to 1e-3 of their unit scale
      adv(cb.total).forEach((x, i) => expect(Math.abs(x - a[i])).toBeLessThan(1e-3));
      Array.from(cb.total).forEach((x, i) => expect(x).toBeCloseTo(plugin.total[i], 6));
    },
    SLOW,
  );

  it(
    'a weighted sum is Σ weight · source before normalisation, each term kept',
    async () => {
      // plug-in scores, and a callback giving 1 to the first image of each group
      const first: RewardCallback = (b) => Float32Array.from(b.pairs, (_, i) => (i % K === 0 ? 1 : 0));
      const plugin = (await scoreSide({ name: 'brightness', config: {} }, inputs)).total;
      const r = await scoreSide(
        {
          sum: {
            bright: { weight: 2, source: { name: 'brightness', config: {} } },
            first: { weight: -0.5, source: { callback: 'first' } },
          },
        },
        inputs,
        { callbacks: { first } },
      );
      const hand = Array.from(plugin, (x, i) => Math.fround(2 * x) + (i % K === 0 ? -0.5 : 0));
      Array.from(r.total).forEach((x, i) => expect(x).toBeCloseTo(hand[i], 6));
      expect(Array.from(r.terms.bright)).toEqual(Array.from(plugin));
      expect(Array.from(r.terms.first)).toEqual([1, 0, 0, 0, 1, 0, 0, 0]);
    },
    SLOW,
  );

  it(
    'a NaN score, a short reply and a server that never answers are RewardErrors naming source, step and item',
    async () => {
      const nan = await scoreSide({ callback: 'bad' }, inputs, {
        callbacks: { bad: (b) => Float32Array.from(b.pairs, (_, i) => (i === 5 ? NaN : 0)) },
      }).catch((e) => e);
      expect(nan).toBeInstanceOf(RewardError);
      expect([nan.reason, nan.step, nan.item]).toEqual(['non_finite', 3, 5]);
      expect(nan.message).toMatch(
        /reward 'gen\/reward' \(callback 'bad', generation\) at step 3: item 5 \(pair p\d, prompt "a \w+ square on a white background"\) scored NaN/,
      );

      const short = await fakeServer((n) => ({ rewards: Array(n - 1).fill(0.5) }));
      const e2 = await scoreSide(config('x', { gen: { k: K, reward: { url: short } } }).gen.reward, inputs).catch(
        (e) => e,
      );
      expect(e2).toBeInstanceOf(RewardError);
      expect([e2.reason, e2.step]).toEqual(['length', 3]);
      expect(e2.message).toContain(`server ${short}`);
      expect(e2.message).toContain('7 rewards for items 0..7 (8 items)');

      const hang = await fakeServer(() => undefined);
      const t0 = Date.now();
      const src = config('x', {
        gen: { k: K, reward: { url: hang, timeoutS: 0.5, retry: { maxRetries: 1, baseDelayMs: 10, jitter: false } } },
      }).gen.reward;
      const e3 = await scoreSide(src, inputs).catch((e) => e);
      expect(e3).toBeInstanceOf(RewardError);
      expect([e3.reason, e3.step]).toEqual(['timeout', 3]);
      expect(e3.message).toContain('no reply within 0.5 s (2 attempts)');
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1000); // both attempts waited their timeout
    },
    SLOW,
  );
});

describe('reward sources in the config', () => {
  const issues = (over: Record<string, unknown>) => {
    try {
      config('c', over);
      return '';
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as Error).message;
    }
  };

  it('each kind parses with its defaults, and a mistake is reported as the kind that was written', () => {
    const c = config('c', {
      und: { reward: { callback: 'judge' } },
      gen: { reward: { url: 'http://127.0.0.1:9/score', authEnv: 'TOKEN' } },
    });
    expect(c.und.reward).toEqual({ callback: 'judge' });
    expect(c.gen.reward).toMatchObject({
      url: 'http://127.0.0.1:9/score',
      timeoutS: 120,
      batchSize: 64,
      authEnv: 'TOKEN',
      retry: { maxRetries: 2 },
    });
    expect(config('c').und.reward).toBeUndefined(); // the built-in accuracy
    expect(issues({ gen: { reward: { url: 'http://h/', timeoutS: -1 } } })).toMatch(/gen\.reward\.timeoutS: Too small/);
    expect(issues({ gen: { reward: { url: 'ftp://h/' } } })).toMatch(/gen\.reward\.url: /);
    expect(issues({ und: { reward: { callback: 3 } } })).toMatch(/und\.reward\.callback: .*string/);
    expect(issues({ gen: { reward: { sum: { a: { weight: 1, source: { callback: 3 } } } } } })).toMatch(
      /gen\.reward\.sum\.a\.source\.callback: .*string/,
    );
  });

  it('a side refuses the sources that cannot score it', () => {
    expect(issues({ und: { reward: { name: 'hps' } } })).toContain(
      "und.reward: a sidecar reward plug-in ('hps') scores generated images",
    );
    expect(issues({ gen: { reward: { sum: { acc: { weight: 1, source: { builtin: 'accuracy' } } } } } })).toContain(
      'gen.reward.sum.acc.source: the built-in accuracy reward scores answers',
    );
  });
});

describe('understanding-side sources', () => {
  const p = (id: string, answer: string) =>
    ({ pair_id: id, question: `q ${id}`, choices: ['yes', 'no'], answer }) as unknown as TrainPair;
  const inputs = {
    side: 'und' as const,
    step: 5,
    pairs: [p('a', 'A'), p('a', 'A'), p('b', 'B'), p('b', 'B')],
    completions: ['A', 'B', 'B', 'x'],
    questions: ['Q a', 'Q a', 'Q b', 'Q b'],
    builtin: () => Float32Array.of(1, 0, 1, 0),
  };

  it('a callback, a server (with its bearer token) and the built-in accuracy, summed', async () => {
    const url = await fakeServer((n) => ({ rewards: Array.from({ length: n }, (_, i) => i) }));
    process.env.PAIRUNI_TEST_REWARD_TOKEN = 's3cret';
    try {
      const cfg = config('u', {
        und: {
          reward: {
            sum: {
              acc: { weight: 1, source: { builtin: 'accuracy' } },
              len: { weight: 0.5, source: { callback: 'len' } },
              judge: { weight: 0.25, source: { url, authEnv: 'PAIRUNI_TEST_REWARD_TOKEN', batchSize: 3 } },
            },
          },
        },
      }).und.reward!;
      const r = await scoreSide(cfg, inputs, {
        callbacks: { len: (b) => (b.side === 'und' ? b.completions.map((c) => c.length) : []) },
      });
      // acc (1, 0, 1, 0) + 0.5 · len (1, 1, 1, 1) + 0.25 · judge (0, 1, 2, 0): the server saw batches of 3 and 1
      expect(Array.from(r.total)).toEqual([1.5, 0.75, 2, 0.5]);
      const sent = received.slice(-2);
      expect(sent.map((x) => x.head.items.length)).toEqual([3, 1]);
      expect(sent[0].auth).toBe('Bearer s3cret');
      expect(sent[0].head).toMatchObject({ side: 'und', step: 5 });
      expect(sent[0].head.items[2]).toEqual({
        completion: 'B',
        question: 'q b',
        choices: ['yes', 'no'],
        answer: 'B',
        pair_id: 'b',
      });
    } finally {
      delete process.env.PAIRUNI_TEST_REWARD_TOKEN;
    }
  });
});

describe('train() with reward sources', () => {
  it(
    'logs each term of a sum; a NaN at step 1 stops the run with a checkpoint at step 1, and resume finishes it',
    async () => {
      const cfg = config('sum', {
        gen: {
          k: K,
          reward: {
            sum: {
              bright: { weight: 1, source: { name: 'brightness' } },
              cb: { weight: 0.5, source: { callback: 'cb' } },
            },
          },
        },
      });
      let step = -1;
      const flaky: RewardCallback = (b) => {
        step = b.step;
        return Float32Array.from(b.pairs, (_, i) => (b.step === 1 && i === 2 ? Infinity : (i % K) / K));
      };
      const err = await train(cfg, { onLog: () => undefined, rewards: { cb: flaky } }).catch((e) => e);
      expect(err).toBeInstanceOf(RewardError);
      expect([err.reason, err.step, err.item, step]).toEqual(['non_finite', 1, 2, 1]);
      expect(err.message).toMatch(/reward 'cb' \(callback 'cb', generation\) at step 1: item 2 .* scored Infinity/);
      expect(latestCheckpoint(cfg.out)?.state.step).toBe(1);
      const [row] = readMetrics(cfg.out) as unknown as Array<Record<string, number>>;
      expect(row['gen/reward/cb']).toBeCloseTo((0 + 0.25 + 0.5 + 0.75) / 4, 6);
      expect(row['gen/reward']).toBeCloseTo(row['gen/reward/bright'] + 0.5 * row['gen/reward/cb'], 5);

      const res = await train(cfg, {
        resume: true,
        onLog: () => undefined,
        rewards: { cb: (b) => Float32Array.from(b.pairs, (_, i) => (i % K) / K) },
      });
      expect(res.steps).toBe(2);
      expect(readMetrics(cfg.out).map((m) => m.step)).toEqual([1, 2]);
    },
    SLOW,
  );

  it(
    'a server that never answers stops the first step with a resumable checkpoint at step 0',
    async () => {
      let answering = false;
      const url = await fakeServer((n) =>
        answering ? { rewards: Array.from({ length: n }, (_, i) => i / n) } : undefined,
      );
      // 5 s, not less: the resumed run must get its reply within the same timeout on a loaded machine
      // (the server answers from this process, whose event loop the step's own work can hold for a while).
      const cfg = config('hang', { steps: 1, gen: { k: K, reward: { url, timeoutS: 5, retry: { maxRetries: 0 } } } });
      const err = await train(cfg, { onLog: () => undefined }).catch((e) => e);
      expect(err).toBeInstanceOf(RewardError);
      expect([err.reason, err.step]).toEqual(['timeout', 0]);
      expect(err.message).toContain(`reward 'gen/reward' (server ${url}, generation) at step 0`);
      // nothing was lost: the policy at the step boundary is saved, and the same run resumes once the server answers
      expect(latestCheckpoint(cfg.out)?.state.step).toBe(0);
      answering = true;
      const res = await train(cfg, { resume: true, onLog: () => undefined });
      expect(res.steps).toBe(1);
      expect(readMetrics(cfg.out)[0]['gen/reward']).toBeCloseTo((0 + 1 + 2 + 3 + 4 + 5 + 6 + 7) / 8 / 8, 6);
    },
    SLOW,
  );

  it('a callback named in the config but not given is a ConfigError before a sidecar starts', async () => {
    const cfg = config('missing', { und: { k: K, maxNewTokens: 4, reward: { callback: 'judge' } } });
    const err = await train(cfg, {
      onLog: () => undefined,
      spawn: () => Promise.reject(new Error('must not start')),
    }).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toContain("und.reward names callback 'judge'");
  });
});
