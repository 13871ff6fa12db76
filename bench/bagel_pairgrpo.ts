/**
 * `npm run bench -- bagel_pairgrpo [--out DIR] [--seeds 0,1,2] [--steps N] [--lr X]`
 *
 * PairGRPO on the shipped tiny pretrained Bagel (assets/tiny-bagel-shapes; `model.options.objective:
 * 'pairgrpo'`: text answers from the und expert, images from the SDE sampler with per-step Gaussian
 * log-probs): a ShapesWorld world and its PairUG pairs as the Bagel demo builds them, one run per seed,
 * and the held-out generation reward (shapes reward of ODE samples, the demo's guidance) and
 * option-letter accuracy of the asset and of every final model, with each run's wall time.
 * Phases whose results exist in DIR are skipped on a rerun.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { BAGEL_DEMO_MODEL } from '../src/demo/bagel.js';
import { buildPairUG } from '../src/pairing/pipeline.js';
import { Sidecar } from '../src/sidecar/sidecar.js';
import { latestCheckpoint } from '../src/train/checkpoint.js';
import { parseTrainConfig } from '../src/train/config.js';
import { readMetrics } from '../src/train/metrics.js';
import { loadArgs, train } from '../src/train/trainer.js';
import { writeJsonAtomic } from '../src/util/atomic.js';

const INSTRUCTION = '{question}\n{choices}\nAnswer with the option letter.';

interface Eval {
  und_accuracy: number;
  gen_reward: number;
  gen_binary?: number;
  gen_reward_by_category?: Record<string, number>;
}

export async function main(argv: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string' },
      seeds: { type: 'string', default: '0,1,2' },
      steps: { type: 'string', default: '30' },
      lr: { type: 'string', default: '1e-4' },
    },
  });
  const out = resolve(values.out ?? mkdtempSync(join(tmpdir(), 'pairuni-bagel-pairgrpo-')));
  const seeds = values.seeds!.split(',').map(Number);
  const steps = Number(values.steps);
  const lr = Number(values.lr);
  mkdirSync(join(out, 'eval'), { recursive: true });
  const card = JSON.parse(readFileSync(join(BAGEL_DEMO_MODEL, 'pairuni_model.json'), 'utf8')) as {
    adapter_options: Record<string, unknown>;
  };
  const world = join(out, 'world');
  const sc0 = await Sidecar.spawn({ threads: 1, env: { OMP_NUM_THREADS: '1' } });
  try {
    if (!existsSync(join(world, 'shapesworld.json')))
      await sc0.shapesworld.build({
        out: world,
        seed: 0,
        sizes: { u_train: 480, g_train: 480, u_eval: 300, g_eval: 48 },
      });
  } finally {
    await sc0.close();
  }
  const pairs = join(out, 'pairug');
  if (!existsSync(join(pairs, 'pairs.jsonl')))
    await buildPairUG({
      understanding: join(world, 'u_train.jsonl'),
      generation: join(world, 'g_train.jsonl'),
      out: pairs,
      backbone: { kind: 'pixels', size: 16 },
      cacheDir: join(out, 'features'),
      config: { seed: 0, kmeans: { k: 48 } },
      backend: 'ts',
    });
  const config = (seed: number) =>
    parseTrainConfig({
      data: join(pairs, 'pairs.jsonl'),
      out: join(out, 'runs', `s${seed}`),
      model: {
        adapter: 'bagel',
        path: BAGEL_DEMO_MODEL,
        device: 'cpu',
        trainModules: ['language_model', 'vit'],
        options: { ...card.adapter_options, objective: 'pairgrpo' },
      },
      mode: 'pairgrpo',
      steps,
      batchPairs: 4,
      seed,
      und: { k: 4, maxNewTokens: 2, instruction: INSTRUCTION },
      gen: {
        k: 4,
        cfgWeight: 4,
        reward: { name: 'shapes', config: {} },
        options: { num_timesteps: 10, noise_level: 0.7 },
      },
      optim: { lr, microBatch: 16 },
      log: { tensorboard: false },
      checkpoint: { every: steps, keep: 1 },
      sidecar: { threads: 1 },
    });
  const evaluate = async (modelDir: string, name: string): Promise<Eval> => {
    const path = join(out, 'eval', `${name}.json`);
    if (!existsSync(path)) {
      const sc = await Sidecar.spawn({ threads: 1, env: { OMP_NUM_THREADS: '1' } });
      try {
        const r = await sc.shapesworld.evalOptions({
          model: { ...loadArgs(config(0)).model, path: modelDir },
          data: world,
          nUnd: 300,
          instruction: INSTRUCTION,
          nGen: 48,
          samples: 2,
          genOptions: { num_timesteps: 25 },
          grid: join(out, 'eval', `${name}.png`),
        });
        writeJsonAtomic(path, r.args, 2);
      } finally {
        await sc.close();
      }
    }
    return JSON.parse(readFileSync(path, 'utf8')) as Eval;
  };
  const before = await evaluate(BAGEL_DEMO_MODEL, 'pretrained');
  const runs: Record<string, unknown>[] = [];
  for (const seed of seeds) {
    const cfg = config(seed);
    const t0 = Date.now();
    const done = latestCheckpoint(cfg.out);
    if (!done || done.state.step < steps) await train(cfg, { resume: Boolean(done), onLog: () => undefined });
    const trainSeconds = Math.round((Date.now() - t0) / 1000);
    const e = await evaluate(join(latestCheckpoint(cfg.out)!.policyDir, 'model'), `s${seed}`);
    const rows = readMetrics(cfg.out);
    const mean = (k: string, rs: typeof rows) =>
      rs.reduce((a, r) => a + Number((r as unknown as Record<string, unknown>)[k] ?? 0), 0) / Math.max(1, rs.length);
    const q = Math.max(1, Math.floor(rows.length / 4));
    runs.push({
      seed,
      und_accuracy: e.und_accuracy,
      gen_reward: e.gen_reward,
      gen_delta: Number((e.gen_reward - before.gen_reward).toFixed(4)),
      gen_reward_by_category: e.gen_reward_by_category,
      train_gen_reward_first_quarter: Number(mean('gen/reward', rows.slice(0, q)).toFixed(4)),
      train_gen_reward_last_quarter: Number(mean('gen/reward', rows.slice(-q)).toFixed(4)),
      train_seconds: trainSeconds,
    });
  }
  return {
    out,
    steps,
    lr,
    pretrained: {
      und_accuracy: before.und_accuracy,
      gen_reward: before.gen_reward,
      gen_reward_by_category: before.gen_reward_by_category,
    },
    runs,
  };
}
