/**
 * `pairuni demo --family bagel`: Bagel SFT on ShapesWorld (PairUni App. E, in miniature).
 *
 *   1. build the world (train/held-out splits from the dataset API)       python: shapesworld build
 *   2. pair it → PairUG, and random pairs of the same size                  SDK: buildPairUG
 *   3. the shipped tiny Bagel pretrained on ShapesWorld (assets/tiny-bagel-shapes, BAGEL-7B-MoT layout,
 *      scripts/pretrain-tiny-bagel.sh): its pretraining pool's overlap with the held-out split, and its
 *      held-out understanding and generation before any SFT
 *   4. SFT (1:1 und:gen pairs, CE + flow MSE) on each pair set for every seed  SDK: train
 *   5. held-out understanding and generation of every final model; report.md with means and 95% CIs over seeds
 *
 * Understanding is scored without a sampler: the option letter with the highest log-likelihood is the
 * answer (`shapesworld.eval_options`). Generation: the shapes reward of images from the adapter's flow
 * sampler (ODE, upstream's guidance settings) for the held-out prompts, per category, and a sample grid.
 * Phases whose results exist are skipped on a rerun; training resumes from its last checkpoint.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { OpReply } from '../contract/ops.js';
import { AbortedError, PairuniError } from '../errors.js';
import { buildPairUG } from '../pairing/pipeline.js';
import { PACKAGE_ROOT } from '../sidecar/python.js';
import { Sidecar } from '../sidecar/sidecar.js';
import { assertUsableOut, latestCheckpoint } from '../train/checkpoint.js';
import { parseTrainConfig, type TrainConfig } from '../train/config.js';
import { readMetrics } from '../train/metrics.js';
import { isTrainerNotice, loadArgs, train } from '../train/trainer.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import { createLogger } from '../util/log.js';
import { addWallTime } from './demo.js';
import { fmtCI, mdTable, meanCI, meanStd, type MeanCI } from './report.js';

export interface BagelDemoOptions {
  out: string;
  seeds?: number[];
  steps?: number;
  /** CI smoke test: small world, 1 seed, 2 steps, 24 held-out items. */
  quick?: boolean;
  signal?: AbortSignal;
  log?: (line: string) => void;
  onStep?: (run: string, step: number, totalSteps: number, runs: number) => void;
}

type Variant = 'pairug' | 'random';
// The demo always scores generation too (nGen > 0), so the reply's generation fields are present.
type UndEval = Required<Omit<OpReply<'shapesworld.eval_options'>, 'elapsed_s' | 'gen_binary_by_category'>>;

export interface BagelDemoResult {
  report: string;
  /** The pretrained asset before any SFT. */
  before: UndEval;
  /** Train/eval overlap of the world's train splits and the asset's pretraining pool (0 = held out). */
  overlap: OpReply<'shapesworld.overlap'>;
  after: Record<Variant, Record<number, UndEval>>;
  summary: Record<Variant, { mean: number; std: number }>;
  /** Held-out generation reward per variant over seeds. */
  genSummary: Record<Variant, MeanCI>;
  /** This invocation's wall time. */
  seconds: number;
  /** The demo's wall time on `out`, summed over every invocation (resumes and reruns). */
  wallSeconds: number;
}

const INSTRUCTION = '{question}\n{choices}\nAnswer with the option letter.';

/** The demo's starting point: a tiny Bagel pretrained on the ShapesWorld pretraining split (held-out rules). */
export const BAGEL_DEMO_MODEL = join(PACKAGE_ROOT, 'assets', 'tiny-bagel-shapes');

function plan(o: BagelDemoOptions) {
  const quick = Boolean(o.quick);
  return {
    // A demo directory made from another starting point (the random-init model before it) is not reused.
    model: 'assets/tiny-bagel-shapes',
    world: quick
      ? { u_train: 48, g_train: 48, u_eval: 24, g_eval: 8 }
      : { u_train: 480, g_train: 480, u_eval: 300, g_eval: 48 },
    clusters: quick ? 8 : 48,
    nUnd: quick ? 24 : 300,
    // held-out prompts x images each, sampled by the ODE with upstream's guidance (4, interval [0.4, 1])
    nGen: quick ? 8 : 48,
    samples: 2,
    genOptions: { num_timesteps: quick ? 10 : 25 },
    steps: o.steps ?? (quick ? 2 : 120),
    seeds: o.seeds ?? (quick ? [0] : [0, 1, 2]),
    batchPairs: 4,
    // Bagel's fine-tuning recipe except lr: 2e-5 is for the 14B model; the tiny asset was pretrained at a
    // peak of 1e-3 (cosine to 1e-4), and fine-tuning it continues at a quarter of that peak (chosen, not tuned).
    optim: { lr: 2.5e-4, betas: [0.9, 0.95] as [number, number], eps: 1e-15, weightDecay: 0, maxGradNorm: 1 },
    options: { vit_image_size: 56, vae_image_size: 32, timestep_shift: 1, text_cond_dropout: 0.1 },
  };
}

const readJson = <T>(p: string): T => JSON.parse(readFileSync(p, 'utf8')) as T;

async function withSidecar<T>(fn: (sc: Sidecar) => Promise<T>): Promise<T> {
  const sc = await Sidecar.spawn({ threads: 1, env: { OMP_NUM_THREADS: '1' } });
  try {
    return await fn(sc);
  } finally {
    await sc.close();
  }
}

export async function runBagelDemo(o: BagelDemoOptions): Promise<BagelDemoResult> {
  const t0 = Date.now();
  const out = resolve(o.out);
  const p = plan(o);
  assertUsableOut(out, 'the demo directory');
  if (!existsSync(join(BAGEL_DEMO_MODEL, 'ema.safetensors')))
    throw new PairuniError(
      'demo',
      `no pretrained tiny Bagel at ${BAGEL_DEMO_MODEL}: regenerate it with \`scripts/pretrain-tiny-bagel.sh\``,
    );
  mkdirSync(out, { recursive: true });
  // Cached worlds, runs and evaluations are only valid for the plan that made them (more seeds are fine).
  const { seeds: _s, ...fixed } = p;
  const planPath = join(out, 'plan.json');
  if (existsSync(planPath)) {
    const before = readJson<Record<string, unknown>>(planPath);
    const now = fixed as Record<string, unknown>;
    const diff = [...new Set([...Object.keys(before), ...Object.keys(now)])].filter(
      (k) => JSON.stringify(before[k]) !== JSON.stringify(now[k]),
    );
    if (diff.length) {
      const what = diff
        .map((k) => `${k}: ${JSON.stringify(before[k])} there, ${JSON.stringify(now[k])} now`)
        .join('; ');
      throw new PairuniError(
        'demo',
        `${out} holds a Bagel demo made with a different plan (${what}); use another --out or delete it`,
      );
    }
  }
  writeJsonAtomic(planPath, fixed);
  try {
    return await bagelPhases(o, t0, p);
  } catch (e) {
    // An interrupted or failed invocation still counts towards the demo's wall time.
    addWallTime(out, Math.round((Date.now() - t0) / 1000));
    throw e;
  }
}

async function bagelPhases(o: BagelDemoOptions, t0: number, p: ReturnType<typeof plan>): Promise<BagelDemoResult> {
  const log = o.log ?? createLogger().info;
  const out = resolve(o.out);
  const check = () => {
    if (o.signal?.aborted) throw new AbortedError('demo interrupted; rerun the same command to resume');
  };

  const world = join(out, 'world');
  if (!existsSync(join(world, 'shapesworld.json'))) {
    log(`[1/5] building ShapesWorld (${p.world.u_train} U + ${p.world.g_train} G train items)`);
    await withSidecar((sc) => sc.shapesworld.build({ out: world, seed: 0, sizes: p.world }));
  }
  check();
  const pairSets: Record<Variant, string> = { pairug: join(out, 'pairug'), random: join(out, 'pairug-random') };
  for (const [v, dir] of Object.entries(pairSets) as [Variant, string][]) {
    if (existsSync(join(dir, 'pairs.jsonl'))) continue;
    log(`[2/5] pairing (${v === 'pairug' ? 'PairUG' : 'random pairs, same size'})`);
    await buildPairUG({
      understanding: join(world, 'u_train.jsonl'),
      generation: join(world, 'g_train.jsonl'),
      out: dir,
      backbone: { kind: 'pixels', size: 16 },
      cacheDir: join(out, 'features'),
      config: { seed: 0, kmeans: { k: p.clusters }, ablation: v === 'pairug' ? 'none' : 'random' },
      backend: 'ts',
      signal: o.signal,
    });
  }
  check();

  const init = BAGEL_DEMO_MODEL;
  const config = (v: Variant, seed: number): TrainConfig =>
    parseTrainConfig({
      data: join(pairSets[v], 'pairs.jsonl'),
      out: join(out, 'runs', `${v}-s${seed}`),
      model: {
        adapter: 'bagel',
        path: init,
        device: 'cpu',
        trainModules: ['language_model', 'vit'],
        options: p.options,
      },
      steps: p.steps,
      batchPairs: p.batchPairs,
      seed,
      und: { instruction: INSTRUCTION },
      optim: p.optim,
      checkpoint: { every: Math.max(1, Math.floor(p.steps / 2)), keep: 1 },
      sidecar: { threads: 1 },
    });
  // Evaluations share one sidecar per phase (each start costs seconds of imports).
  const evaluate = async (sc: Sidecar, modelDir: string, path: string): Promise<UndEval> => {
    if (!existsSync(path)) {
      const model = { ...loadArgs(config('pairug', 0)).model, path: modelDir };
      const r = await sc.shapesworld.evalOptions({
        model,
        data: world,
        nUnd: p.nUnd,
        instruction: INSTRUCTION,
        nGen: p.nGen,
        samples: p.samples,
        genOptions: p.genOptions,
        grid: path.replace(/\.json$/, '.png'),
      });
      const { elapsed_s: _e, ...res } = r.args;
      writeJsonAtomic(path, res, 2);
    }
    return readJson<UndEval>(path);
  };
  mkdirSync(join(out, 'eval'), { recursive: true });
  const beforePath = join(out, 'eval', 'pretrained.json');
  const overlapPath = join(out, 'eval', 'overlap.json');
  if (!existsSync(beforePath) || !existsSync(overlapPath)) {
    log('[3/5] the pretrained tiny Bagel: train/eval overlap, held-out understanding and generation');
    await withSidecar(async (sc) => {
      // Held-out means held out: the demo's world and the asset's pretraining pool against the eval split.
      writeJsonAtomic(overlapPath, (await sc.shapesworld.overlap({ data: world, modelDir: init })).args, 2);
      await evaluate(sc, init, beforePath);
    });
  }
  const overlap = readJson<OpReply<'shapesworld.overlap'>>(overlapPath);
  const before = readJson<UndEval>(beforePath);
  check();

  const runs = (['pairug', 'random'] as const).flatMap((variant) => p.seeds.map((seed) => ({ variant, seed })));
  log(`[4/5] SFT: ${runs.length} runs × ${p.steps} steps (${p.batchPairs} pairs/step, 1 und + 1 gen sample per pair)`);
  for (const r of runs) {
    const cfg = config(r.variant, r.seed);
    const done = latestCheckpoint(cfg.out);
    if (done && done.state.step >= p.steps) continue;
    await train(cfg, {
      resume: Boolean(done),
      signal: o.signal,
      onLog: (l) => void (isTrainerNotice(l) && log(`  ${l}`)),
      onStep: (m) => o.onStep?.(`${r.variant}-s${r.seed}`, m.step, p.steps, runs.length),
    });
  }
  check();

  const after: BagelDemoResult['after'] = { pairug: {}, random: {} };
  const evalPath = (r: { variant: Variant; seed: number }) => join(out, 'eval', `${r.variant}-s${r.seed}.json`);
  if (runs.some((r) => !existsSync(evalPath(r)))) {
    log('[5/5] held-out understanding and generation of every SFT model');
    await withSidecar(async (sc) => {
      for (const r of runs)
        await evaluate(sc, join(latestCheckpoint(config(r.variant, r.seed).out)!.policyDir, 'model'), evalPath(r));
    });
  }
  for (const r of runs) after[r.variant][r.seed] = readJson<UndEval>(evalPath(r));
  const summary = {
    pairug: meanStd(Object.values(after.pairug).map((e) => e.und_accuracy)),
    random: meanStd(Object.values(after.random).map((e) => e.und_accuracy)),
  };
  const genSummary = {
    pairug: meanCI(Object.values(after.pairug).map((e) => e.gen_reward)),
    random: meanCI(Object.values(after.random).map((e) => e.gen_reward)),
  };
  const undCI = (v: Variant) => fmtCI(meanCI(Object.values(after[v]).map((e) => e.und_accuracy)));
  const cats = Object.keys(before.gen_reward_by_category);
  const catMean = (v: Variant, c: string) =>
    meanStd(Object.values(after[v]).map((e) => e.gen_reward_by_category[c] ?? 0)).mean.toFixed(3);
  const seconds = Math.round((Date.now() - t0) / 1000);
  // Summed over every invocation on `out`: a no-op rerun must not report its own 0 s as the demo's cost.
  const wall = addWallTime(out, seconds);
  const lastLoss = (v: Variant, k: 'ce' | 'mse') =>
    meanStd(
      p.seeds.map((s) => {
        const rows = readMetrics(config(v, s).out);
        return Number(rows[rows.length - 1]?.[k]);
      }),
    );
  const llm = readJson<{ hidden_size: number; num_hidden_layers: number }>(join(init, 'llm_config.json'));
  const pm = (x: { mean: number; std: number }) => `${x.mean.toFixed(3)} ± ${x.std.toFixed(3)}`;
  const lines = [
    '# Bagel SFT on ShapesWorld: PairUG vs random pairs',
    '',
    `The shipped tiny Bagel pretrained on ShapesWorld's pretraining split (assets/tiny-bagel-shapes: Qwen2 MoT hidden ${llm.hidden_size} × ${llm.num_hidden_layers} layers, ` +
      `SigLIP hidden 32, VAE z=16; scripts/pretrain-tiny-bagel.sh), SFT ${p.steps} steps × ${p.batchPairs} pairs ` +
      `(each pair one packed sequence: 1 understanding + 1 generation sample; CE + flow-matching MSE; AdamW β 0.9/0.95, eps 1e-15, lr ${p.optim.lr}, clip 1), ` +
      `seeds ${p.seeds.join(', ')}. Held-out understanding: ${before.n_und} items from the world's held-out split, answer = the option letter with the highest log-likelihood. ` +
      `Train/eval overlap (the world's train splits and the asset's pretraining pool against the held-out split): ` +
      `${overlap.uDuplicates}/${overlap.uEval} understanding items, ${overlap.gVerbatim}/${overlap.gEval} generation prompts. ` +
      `Wall time ${wall.seconds} s${wall.invocations > 1 ? ` over ${wall.invocations} invocations (interrupted and resumed, or rerun)` : ''}.`,
    '',
    mdTable(
      [
        '',
        'held-out understanding accuracy (mean ± 95% CI)',
        'held-out generation reward (mean ± 95% CI)',
        'final train CE',
        'final train MSE',
      ],
      [
        ['pretrained (before SFT)', before.und_accuracy.toFixed(3), before.gen_reward.toFixed(3), '', ''],
        [
          'SFT on PairUG',
          undCI('pairug'),
          fmtCI(genSummary.pairug),
          pm(lastLoss('pairug', 'ce')),
          pm(lastLoss('pairug', 'mse')),
        ],
        [
          'SFT on random pairs',
          undCI('random'),
          fmtCI(genSummary.random),
          pm(lastLoss('random', 'ce')),
          pm(lastLoss('random', 'mse')),
        ],
      ],
    ),
    '',
    `Generation: shapes reward (graded, 0–1) of ${before.samples_per_prompt} images for each of ${before.n_gen_prompts} held-out prompts, ` +
      `sampled by the flow sampler's ODE (${p.genOptions.num_timesteps} time points, shift 3, text guidance 4 in t ∈ (0.4, 1], global renorm); ` +
      'per category (mean over seeds):',
    '',
    mdTable(
      ['category', 'pretrained', 'SFT on PairUG', 'SFT on random pairs'],
      cats.map((c) => [
        c,
        (before.gen_reward_by_category[c] ?? 0).toFixed(3),
        catMean('pairug', c),
        catMean('random', c),
      ]),
    ),
    '',
    'Sample grids (first image of the first 16 held-out prompts, same seeds for every model): `eval/pretrained.png`, `eval/<variant>-s<seed>.png`.',
    '',
  ];
  const report = join(out, 'report.md');
  writeFileAtomic(report, lines.join('\n'));
  writeJsonAtomic(
    join(out, 'summary.json'),
    { before, after, summary, genSummary, overlap, wallSeconds: wall.seconds, invocations: wall.invocations, plan: p },
    2,
  );
  return { report, before, overlap, after, summary, genSummary, seconds, wallSeconds: wall.seconds };
}
