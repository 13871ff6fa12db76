/**
 * `npm run bench -- reward [--steps N] [--warmup W] [--size PX] [--threads n]`
 *
 * The tiny Janus PairGRPO step (4 pairs, K = 4 per side: 16 generated images) with its generation
 * reward from three sources: the `brightness` plug-in in the sidecar, the same formula as a TS
 * callback, and the reference reward server (examples/reward_server.py wrapping `brightness`) on
 * loopback. The tiny model draws 16 px images; a bench-only op (bench/_reward_upscale.py) enlarges each
 * rollout's images to `--size` px (default 384) in the sidecar before the rewards, and its time is
 * taken out of the step. The three sources alternate step by step (same step index, same rollout),
 * so a busy machine slows them alike. Prints per-source step medians and
 * `ts_callback_ratio` / `http_ratio` = median step time over the plug-in's (target ≤ 1.1).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { resolvePython, Sidecar } from '../src/sidecar/index.js';
import { pythonEnv } from '../src/sidecar/python.js';
import { buildTinyJanus, writeTinyPairUG } from '../src/train/fixtures.js';
import {
  loadArgs,
  loadPairUG,
  pairGrpoStep,
  parseTrainConfig,
  type GenRewardBatch,
  type RewardCallback,
} from '../src/train/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const r4 = (x: number) => Number(x.toFixed(4));

/** `brightness` in TS: each image's mean byte / 255. */
const bright: RewardCallback = (b) => {
  const { images } = b as GenRewardBatch;
  const per = images.nbytes / images.shape[0];
  const px = images.bytes;
  return Float32Array.from({ length: images.shape[0] }, (_, i) => {
    let s = 0;
    for (let j = i * per; j < (i + 1) * per; j++) s += px[j];
    return s / per / 255;
  });
};

export async function main(argv: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args: argv,
    options: {
      steps: { type: 'string', default: '4' },
      warmup: { type: 'string', default: '1' },
      size: { type: 'string', default: '384' },
      threads: { type: 'string', default: '1' },
    },
  });
  const steps = Number(values.steps);
  const warmup = Number(values.warmup);
  const size = Number(values.size);
  const threads = Number(values.threads);
  const dir = mkdtempSync(join(tmpdir(), 'pairuni-bench-reward-'));
  const server = spawn(
    resolvePython(),
    [join(here, '..', 'examples', 'reward_server.py'), '--reward', 'brightness', '--port', '0'],
    {
      env: pythonEnv({ OMP_NUM_THREADS: String(threads) }),
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  let sc: Sidecar | undefined;
  try {
    const ready = createInterface({ input: server.stdout! })[Symbol.asyncIterator]().next();
    sc = await Sidecar.spawn({ threads, plugins: ['_reward_upscale'], env: { PYTHONPATH: here } });
    const model = await buildTinyJanus(sc, join(dir, 'tiny'));
    const data = writeTinyPairUG(join(dir, 'data'), 16);
    const pairs = loadPairUG(data);
    const line = (await ready).value as string | undefined;
    const url = line && /listening on (\S+)/.exec(line)?.[1];
    if (!url) throw new Error(`the reward server did not start (${line ?? 'no output'})`);
    const cfg = (reward: Record<string, unknown>) =>
      parseTrainConfig({
        data,
        out: join(dir, 'out'),
        model: { path: model, device: 'cpu' },
        batchPairs: 4,
        und: { k: 4, maxNewTokens: 8 },
        gen: { k: 4, reward },
        optim: { lr: 1e-12, microBatch: 32 }, // the update runs in full but leaves the policy as it is: every source sees the same rollouts
        log: { tensorboard: false, sampleEvery: 0 },
      });
    const sources = {
      plugin: cfg({ name: 'brightness' }),
      ts_callback: cfg({ callback: 'bright' }),
      http: cfg({ url, batchSize: 16 }),
    };
    await sc.train.load(loadArgs(sources.plugin));

    // The sidecar as pairGrpoStep sees it, with every generation rollout enlarged (timed apart).
    const side = sc;
    let upscaleS = 0;
    let shape: number[] = [];
    const wrapped = new Proxy(side, {
      get(t, p) {
        if (p === 'all') {
          return async (op: string, args: never, payloads?: never) => {
            const rs = await (t.all as (...a: unknown[]) => Promise<Array<{ args: { handle: string } }>>)(
              op,
              args,
              payloads,
            );
            if (op === 'train.gen_rollout') {
              const t0 = performance.now();
              for (const [rank, r] of rs.entries()) {
                const first = await t.call('bench.upscale_rollout', { handle: r.args.handle, factor: 1 }, {}, { rank });
                const h = (first.args as { shape: number[] }).shape[1];
                const up = await t.call(
                  'bench.upscale_rollout',
                  { handle: r.args.handle, factor: Math.max(1, Math.round(size / h)) },
                  {},
                  { rank },
                );
                shape = (up.args as { shape: number[] }).shape;
              }
              upscaleS += (performance.now() - t0) / 1000;
            }
            return rs;
          };
        }
        const v = Reflect.get(t, p, t) as unknown;
        return typeof v === 'function' ? v.bind(t) : v;
      },
    }) as Sidecar;

    const times: Record<keyof typeof sources, number[]> = { plugin: [], ts_callback: [], http: [] };
    const rewardTimes: Record<keyof typeof sources, number[]> = { plugin: [], ts_callback: [], http: [] };
    const rewards: Record<keyof typeof sources, number[]> = { plugin: [], ts_callback: [], http: [] };
    for (let s = 0; s < warmup + steps; s++) {
      for (const name of Object.keys(sources) as Array<keyof typeof sources>) {
        upscaleS = 0;
        const t0 = performance.now();
        const m = await pairGrpoStep(wrapped, sources[name], pairs, s, { rewards: { bright } });
        const wall = (performance.now() - t0) / 1000 - upscaleS;
        if (s >= warmup) {
          times[name].push(wall);
          rewardTimes[name].push(m['time/reward']);
          rewards[name].push(m['gen/reward']);
        }
      }
    }
    const med = (k: keyof typeof sources) => median(times[k]);
    return {
      steps,
      images: shape[0],
      image_px: shape[1],
      image_bytes_per_step: shape.reduce((a, b) => a * b, 1),
      threads,
      plugin_step_s: r4(med('plugin')),
      ts_callback_step_s: r4(med('ts_callback')),
      http_step_s: r4(med('http')),
      plugin_reward_s: r4(median(rewardTimes.plugin)),
      ts_callback_reward_s: r4(median(rewardTimes.ts_callback)),
      http_reward_s: r4(median(rewardTimes.http)),
      // the three sources score the same images: their mean rewards agree to float rounding
      same_rewards: rewards.plugin.every(
        (r, i) => Math.abs(r - rewards.ts_callback[i]) < 1e-5 && Math.abs(r - rewards.http[i]) < 1e-5,
      ),
      ts_callback_ratio: Number((med('ts_callback') / med('plugin')).toFixed(3)),
      http_ratio: Number((med('http') / med('plugin')).toFixed(3)),
      target_ratio: 1.1,
    };
  } finally {
    server.kill();
    await sc?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
