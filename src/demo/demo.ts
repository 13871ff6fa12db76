/**
 * The embedded demo: the whole PairUni pipeline on ShapesWorld with a tiny pretrained Janus, on CPU.
 *
 *   1. build the world (U and G manifests, held-out eval splits)          python: shapesworld build
 *   2. embed (weight-free `pixels`) and pair it → PairUG; also random pairs  SDK: buildPairUG
 *   3. evaluate the pretrained model on held-out items                      python: shapesworld eval
 *   4. PairGRPO on PairUG and, with the same recipe and budget, on random pairs, for each seed  SDK: train
 *   5. evaluate every final policy and write report.md (tables, curves, image grids)
 *
 * Every phase writes its result atomically and is skipped on a rerun when its result exists, so an
 * interrupted demo resumes where it stopped (training itself resumes from its last checkpoint).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import type { OpReply } from '../contract/ops.js';
import { AbortedError, ConfigError, PairuniError } from '../errors.js';
import { buildPairUG } from '../pairing/pipeline.js';
import { PACKAGE_ROOT } from '../sidecar/python.js';
import { Sidecar } from '../sidecar/sidecar.js';
import { FAMILY_CONFIG_DEFAULTS } from '../contract/families/index.js';
import { modelFamily } from '../contract/model-family.js';
import { parseTrainConfig, type TrainConfigInput } from '../train/config.js';
import { readEvals, readMetrics, type StepMetrics } from '../train/metrics.js';
import { assertUsableOut, latestCheckpoint } from '../train/checkpoint.js';
import { train } from '../train/trainer.js';
import {
  fmtCI,
  lineChart,
  mdTable,
  meanCI,
  meanStd,
  pairedDiffCI,
  smooth,
  type MeanCI,
  type Series,
} from './report.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import { createLogger } from '../util/log.js';

export interface DemoOptions {
  /** Output directory (default `runs/demo`). */
  out: string;
  /** Pretrained model directory (default: the shipped tiny model of `family`). */
  model?: string;
  /** Which shipped tiny model the default `model` is (its card's `family` picks the adapter either way). */
  family?: DemoFamily;
  seeds?: number[];
  /** PairGRPO steps per run. */
  steps?: number;
  /** A much shorter run (CI smoke test): tiny world, 1 seed, few steps, small eval. */
  quick?: boolean;
  /** Runs trained at once (each sidecar uses one thread). */
  parallel?: number;
  signal?: AbortSignal;
  log?: (line: string) => void;
  /** Called after every training step of every run (for a progress bar). */
  onStep?: (run: string, step: number, totalSteps: number, runs: number) => void;
  /**
   * Evaluate each run's policy on held-out pairs every N steps, and at step 0 and the end (the train
   * config's `eval.every`; 0 or unset: never). Logged as `eval/...`, tabled in the report. Not part of
   * the plan: a finished demo can be rerun without it, a resumed one with it.
   */
  evalEvery?: number;
  /** Experiment trackers every run reports to (the train config's `loggers`, e.g. `['wandb']`). */
  loggers?: TrainConfigInput['loggers'];
}

/** One model's held-out results (`shapesworld.eval`'s reply, a metric record: keys as in the eval files). */
export type EvalResult = OpReply<'shapesworld.eval'>;

export type ArmStat = MeanCI & { std: number };

export interface DemoResult {
  report: string;
  before: EvalResult;
  after: Record<'pairgrpo' | 'random', Record<number, EvalResult>>;
  /** Per arm: the mean over seeds with its std and 95% t-interval. */
  summary: Record<'pairgrpo' | 'random', { und: ArmStat; gen: ArmStat; gradCos: ArmStat }>;
  /** PairUG − random per side (and for the mean und–gen gradient cosine), paired by seed, with its 95% t-interval. */
  paired: { und: MeanCI; gen: MeanCI; gradCos: MeanCI };
  /** Train/eval overlap of the world and the model's pretraining pool (`shapesworld.overlap`). */
  overlap: SplitOverlap;
  seconds: number;
}

/** Held-out prompts shown in the before/after grids. */
const GRID_N = 16;
/** Held-out pairs each evaluation during training scores (one answer, one image each). */
const EVAL_DURING_N = 16;

export const DEFAULT_MODEL = join(PACKAGE_ROOT, 'assets', 'tiny-janus-shapes');
/** The shipped pretrained tiny models, one per family (`npm run demo` stays Janus). */
export const DEMO_MODELS = { janus: DEFAULT_MODEL, dimoo: join(PACKAGE_ROOT, 'assets', 'tiny-dimoo-shapes') } as const;
export type DemoFamily = keyof typeof DEMO_MODELS;

interface Plan {
  world: { u_train: number; g_train: number; u_eval: number; g_eval: number };
  clusters: number;
  evalN: number;
  evalUnd: number;
  evalSamples: number;
  steps: number;
  seeds: number[];
  batchPairs: number;
  k: number;
  lr: number;
  /** `model.options` the runs train with beyond the model card's (e.g. DiMOO's log-prob estimator). */
  modelOptions: Record<string, unknown>;
  /** `gen` and `loss` settings beyond the demo's own (e.g. DiMOO's image log-prob without guidance). */
  gen: Record<string, unknown>;
  loss: Record<string, unknown>;
  /** The model card's family (the report names the model by it). */
  family: string;
}

type PlanNumbers = Omit<Plan, 'family' | 'modelOptions' | 'gen' | 'loss'> &
  Partial<Pick<Plan, 'modelOptions' | 'gen' | 'loss'>>;

/**
 * Where a family's demo differs from the Janus plan below, and why: the one place for per-family demo
 * numbers (its training defaults, such as DiMOO's rollout size 2, come from FAMILY_CONFIG_DEFAULTS).
 */
const FAMILY_DEMO: Record<string, { full?: Partial<PlanNumbers>; quick?: Partial<PlanNumbers> }> = {
  dimoo: {
    // Sized to fit 15 min on 2 cores (docs/results.md: measured): 3 seeds × 20 steps, held-out 300 und + 150 gen prompts × 2.
    // The trajectory estimator: with the one-step mean-field estimate an update did not raise the sampler's
    // probability of the better image of a pair (it scores every code with the whole image masked, marginals
    // the sampler never draws from), and held-out generation fell on every seed. With it, guidance in the
    // image log-prob pass and lr 1e-4 still drew held-out images empty on seed 1 (0.569 → 0.490); the
    // conditional log-prob at lr 5e-5 kept them (0.572), on the earlier 600-step tiny DiMOO. With the 1200-step
    // one, held-out generation rose on all 3 seeds (0.602 → 0.641, 0.622, 0.629). Diagnostics: docs/notes.md, issue 11.
    full: {
      steps: 20,
      seeds: [0, 1, 2],
      evalN: 150,
      evalUnd: 300,
      world: { u_train: 960, g_train: 960, u_eval: 300, g_eval: 150 },
      lr: 5e-5,
      modelOptions: { estimator: 'trajectory' },
      gen: { logp: 'cond' },
    },
    quick: { lr: 5e-5, modelOptions: { estimator: 'trajectory' }, gen: { logp: 'cond' } },
  },
};

function plan(o: DemoOptions, family: string): Plan {
  const quick = Boolean(o.quick);
  const fam = FAMILY_DEMO[family]?.[quick ? 'quick' : 'full'] ?? {};
  // The family's rollout size where it has one (DiMOO: the paper's 2), else the Janus demo's.
  const famK = FAMILY_CONFIG_DEFAULTS[family]?.gen?.k;
  const base: PlanNumbers = {
    // Understanding is scored on 4× more held-out items than generation: answering is cheap, and with
    // 50 items a category one lucky majority letter moved a category by ±0.2 (measured: the same six
    // policies ranked differently on 300 vs 1200 items; 1200 agree with each other).
    world: quick
      ? { u_train: 96, g_train: 96, u_eval: 24, g_eval: 24 }
      : { u_train: 960, g_train: 960, u_eval: 1200, g_eval: 300 },
    clusters: quick ? 12 : 96,
    evalN: quick ? 24 : 300,
    evalUnd: quick ? 24 : 1200,
    evalSamples: quick ? 1 : 2,
    steps: quick ? 2 : 150,
    // Three seeds by default, to fit 15 minutes on 2 cores: 5 seeds × 2 arms × 150 steps are 1500 PairGRPO
    // steps (26 min measured on 2 busy cores). More seeds narrow the interval (a 95% t-interval on 3 seeds is
    // ±4.3 standard errors, on 5 seeds ±2.8): `--seeds 0,1,2,3,4`.
    seeds: quick ? [0] : [0, 1, 2],
    batchPairs: quick ? 2 : 8,
    // Calibrated on 2 CPU cores: 3 seeds × 2 variants × 150 steps took about 8.5 minutes (5 seeds: ~14, estimated).
    k: typeof famK === 'number' ? famK : quick ? 4 : 8,
    lr: 1e-4,
  };
  const p = { ...base, ...fam };
  return {
    ...p,
    steps: o.steps ?? p.steps,
    seeds: o.seeds ?? p.seeds,
    modelOptions: p.modelOptions ?? {},
    gen: p.gen ?? {},
    loss: p.loss ?? {},
    family,
  };
}

/** The family's recipe changes, as the report states them (empty for the Janus demo). */
function recipeNote(p: Plan): string {
  const parts = [
    ...Object.entries(p.modelOptions).map(([k, v]) => `model.options.${k} ${JSON.stringify(v)}`),
    ...Object.entries(p.gen).map(([k, v]) => `gen.${k} ${JSON.stringify(v)}`),
    ...Object.entries(p.loss).map(([k, v]) => `loss.${k} ${JSON.stringify(v)}`),
  ];
  return parts.length ? `; ${parts.join(', ')}` : '';
}

/** Wall time summed over every invocation that worked on `out` (a resumed demo reports its whole cost). */
export function addWallTime(out: string, seconds: number): { seconds: number; invocations: number } {
  const path = join(out, 'timing.json');
  const prev = existsSync(path)
    ? readJson<{ seconds: number; invocations: number }>(path)
    : { seconds: 0, invocations: 0 };
  const next = { seconds: prev.seconds + seconds, invocations: prev.invocations + 1 };
  writeJsonAtomic(path, next, 2);
  return next;
}

/** An evaluation on disk counts as done only if it used this plan's held-out sizes (else it is redone). */
function evalDone(path: string, p: Plan): boolean {
  if (!existsSync(path)) return false;
  const e = readJson<Record<string, unknown>>(path);
  return e.n_und === p.evalUnd && e.n_gen_prompts === p.evalN && typeof e.grid === 'string';
}

function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}

/**
 * Runs ShapesWorld ops (build, held-out evaluation through the model's adapter) in a fresh
 * single-threaded sidecar, so evaluations run side by side and give the same numbers whatever runs beside them.
 */
async function shapesworld<T>(run: (sc: Sidecar) => Promise<T>, signal?: AbortSignal): Promise<T> {
  // A Ctrl-C while the sidecar starts stops the start (Sidecar.spawn's signal).
  const sc = await Sidecar.spawn({ threads: 1, env: { OMP_NUM_THREADS: '1' }, signal }).catch((e: unknown) => {
    throw e instanceof AbortedError ? new AbortedError('demo interrupted', { cause: e }) : e;
  });
  const onAbort = () => void sc.close(1000);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    if (signal?.aborted) throw new AbortedError('demo interrupted'); // aborted just after the start: no event will come
    return await run(sc);
  } catch (e) {
    if (signal?.aborted) throw new AbortedError('demo interrupted');
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await sc.close();
  }
}

async function pool<T>(items: T[], width: number, fn: (t: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  const errors: unknown[] = [];
  await Promise.all(
    Array.from({ length: Math.max(1, width) }, async () => {
      for (let t = queue.shift(); t !== undefined; t = queue.shift()) {
        try {
          await fn(t);
        } catch (e) {
          errors.push(e);
          queue.length = 0;
        }
      }
    }),
  );
  if (errors.length) throw errors[0];
}

/**
 * What the cached results in `out` were made with. Resuming with a different world, recipe or model would
 * mix stale pairs, checkpoints or evaluations into the report, so it is refused instead (more or fewer seeds
 * are fine: every run has its own directory; evaluation sizes are checked per evaluation).
 */
function checkPlan(out: string, p: Plan, model: string): void {
  const digest = createHash('sha256');
  for (const f of readdirSync(model)
    .filter((f) => f === 'config.json' || f.endsWith('.safetensors'))
    .sort()) {
    digest.update(f).update(readFileSync(join(model, f)));
  }
  const now: Record<string, unknown> = {
    world: p.world,
    clusters: p.clusters,
    steps: p.steps,
    batchPairs: p.batchPairs,
    k: p.k,
    lr: p.lr,
    // Janus plans written before model options existed have none: an empty set reads as absent.
    ...Object.fromEntries(
      (['modelOptions', 'gen', 'loss'] as const).filter((k) => Object.keys(p[k]).length).map((k) => [k, p[k]]),
    ),
    model: digest.digest('hex').slice(0, 16),
  };
  const path = join(out, 'plan.json');
  if (!existsSync(path)) {
    mkdirSync(out, { recursive: true });
    writeJsonAtomic(path, { ...now, modelPath: model }, 2);
    return;
  }
  const before = readJson<Record<string, unknown>>(path);
  const diff = Object.keys(now).filter((k) => JSON.stringify(before[k]) !== JSON.stringify(now[k]));
  if (diff.length) {
    const what = diff.map((k) =>
      k === 'model'
        ? `model: ${String(before.modelPath)} there, ${model} now (different weights)`
        : `${k}: ${JSON.stringify(before[k])} there, ${JSON.stringify(now[k])} now`,
    );
    throw new PairuniError(
      'demo',
      `${out} holds a demo made with a different plan (${what.join('; ')}): its pairs, checkpoints and evaluations would not match. Use another --out, or delete ${out} to start over.`,
    );
  }
}

/**
 * Refuses options that cannot make a demo, before any work: a bad value found later would have cost
 * a world build, pairing and an evaluation, and been stored in plan.json (NaN as `null`), where it
 * made every later run on that `out` refuse to resume.
 */
export function validateDemoOptions(o: DemoOptions): void {
  const bad = (what: string, v: unknown) =>
    new ConfigError(`demo: ${what}, got ${typeof v === 'number' || v === undefined ? String(v) : JSON.stringify(v)}`);
  if (typeof o.out !== 'string' || !o.out) throw bad('out must be a directory path', o.out);
  if (existsSync(o.out) && !statSync(o.out).isDirectory())
    throw new ConfigError(`demo: out ${o.out} is a file, not a directory`);
  if (o.model !== undefined && (typeof o.model !== 'string' || !o.model))
    throw bad('model must be a model directory path', o.model);
  if (o.family !== undefined && !Object.hasOwn(DEMO_MODELS, o.family))
    throw bad(
      `family must be one of ${Object.keys(DEMO_MODELS).join(', ')} (bagel has its own demo, runBagelDemo: 'pairuni demo --family bagel')`,
      o.family,
    );
  if (o.steps !== undefined && !(Number.isSafeInteger(o.steps) && o.steps >= 1))
    throw bad('steps must be a positive integer', o.steps);
  if (o.parallel !== undefined && !(Number.isSafeInteger(o.parallel) && o.parallel >= 1))
    throw bad('parallel must be a positive integer', o.parallel);
  if (o.evalEvery !== undefined && !(Number.isSafeInteger(o.evalEvery) && o.evalEvery >= 0))
    throw bad('evalEvery must be an integer >= 0', o.evalEvery);
  // The trainer's own declaration judges `loggers`, here and not after the world and the pairs are built.
  if (o.loggers !== undefined)
    parseTrainConfig({ data: 'pairs.jsonl', out: 'out', model: { path: 'model' }, loggers: o.loggers }, '.', 'demo');
  if (o.seeds !== undefined) {
    if (!Array.isArray(o.seeds) || o.seeds.length === 0)
      throw bad('seeds must be a non-empty list of integers >= 0', o.seeds);
    const wrong = o.seeds.find((x) => !(Number.isSafeInteger(x) && x >= 0));
    if (wrong !== undefined || o.seeds.some((x) => x === undefined))
      throw bad('every seed must be an integer >= 0', wrong);
    if (new Set(o.seeds).size !== o.seeds.length)
      throw bad('seeds must not repeat (each seed is one run directory)', o.seeds);
  }
}

export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const t0 = Date.now();
  validateDemoOptions(o);
  assertUsableOut(o.out, 'the demo directory');
  const model = resolve(o.model ?? DEMO_MODELS[o.family ?? 'janus']);
  if (!existsSync(join(model, 'config.json'))) {
    const how =
      (o.family ?? 'janus') === 'dimoo'
        ? 'scripts/pretrain-tiny-dimoo.sh'
        : `python -m pairuni_sidecar.shapesworld pretrain --out ${model}`;
    throw new PairuniError('demo', `no pretrained model at ${model}: regenerate it with \`${how}\``);
  }
  const { family, source } = modelFamily(model);
  // The model's family picks the recipe: a model of another family than --family asked for would run that recipe unannounced.
  if (o.family !== undefined && o.family !== family) {
    throw new ConfigError(
      `demo: family ${o.family} was asked for, but ${model} is a ${family} model (${source}); pass a ${o.family} model or leave out the family`,
    );
  }
  const p = plan(o, family);
  checkPlan(resolve(o.out), p, model);
  try {
    return await runPhases(o, t0, p, model);
  } catch (e) {
    // An interrupted or failed invocation still counts towards the demo's wall time.
    const out = resolve(o.out);
    if (existsSync(out)) addWallTime(out, Math.round((Date.now() - t0) / 1000));
    throw e;
  }
}

async function runPhases(o: DemoOptions, t0: number, p: Plan, model: string): Promise<DemoResult> {
  const log = o.log ?? createLogger().info;
  const out = resolve(o.out);
  mkdirSync(out, { recursive: true });
  const check = () => {
    if (o.signal?.aborted) throw new AbortedError('demo interrupted; rerun the same command to resume');
  };

  // 1. The world.
  const world = join(out, 'world');
  const worldMeta = join(world, 'shapesworld.json');
  if (
    !existsSync(worldMeta) ||
    JSON.stringify(readJson<{ sizes: unknown }>(worldMeta).sizes) !== JSON.stringify(p.world)
  ) {
    log(`[1/5] building ShapesWorld (${p.world.u_train} U + ${p.world.g_train} G train items) in ${world}`);
    await shapesworld((sc) => sc.shapesworld.build({ out: world, seed: 0, sizes: p.world }), o.signal);
  } else log('[1/5] ShapesWorld already built');
  // Held-out means held out: measured on the files the demo trains and evaluates on, and on the model's pretraining pool.
  const overlap = await shapesworld(
    async (sc) => (await sc.shapesworld.overlap({ data: world, modelDir: model })).args,
    o.signal,
  );
  log(
    `  train/eval overlap: ${overlap.uDuplicates}/${overlap.uEval} understanding items, ${overlap.gVerbatim}/${overlap.gEval} generation prompts` +
      (overlap.caveat ? ` (not checked: ${overlap.caveat})` : ''),
  );
  check();

  // 2. Pairing: PairUG and the random-pairs baseline, same budget.
  const pairSets = { pairgrpo: join(out, 'pairug'), random: join(out, 'pairug-random') } as const;
  for (const [name, dir] of Object.entries(pairSets)) {
    if (existsSync(join(dir, 'pairs.jsonl'))) {
      log(`[2/5] ${name} pairs already built`);
      continue;
    }
    log(`[2/5] pairing (${name === 'pairgrpo' ? 'PairUG' : 'random pairs, same budget'})`);
    const res = await buildPairUG({
      understanding: join(world, 'u_train.jsonl'),
      generation: join(world, 'g_train.jsonl'),
      out: dir,
      backbone: { kind: 'pixels', size: 16 },
      cacheDir: join(out, 'features'),
      config: { seed: 0, kmeans: { k: p.clusters }, ablation: name === 'pairgrpo' ? 'none' : 'random' },
      backend: 'ts',
      signal: o.signal,
    });
    log(
      res.summary
        .split('\n')
        .map((l) => `  ${l}`)
        .join('\n'),
    );
  }
  // Evaluation during training scores the held-out items, paired the PairUG way (its own file: never trained on).
  const heldOut = join(out, 'pairug-heldout', 'pairs.jsonl');
  if (o.evalEvery && !existsSync(heldOut)) {
    log('[2/5] pairing the held-out items (evaluation during training)');
    await buildPairUG({
      understanding: join(world, 'u_eval.jsonl'),
      generation: join(world, 'g_eval.jsonl'),
      out: join(out, 'pairug-heldout'),
      backbone: { kind: 'pixels', size: 16 },
      cacheDir: join(out, 'features'),
      config: { seed: 0, kmeans: { k: p.clusters } },
      backend: 'ts',
      signal: o.signal,
    });
  }
  check();

  // 3. The pretrained starting point.
  const evalDir = join(out, 'eval');
  mkdirSync(evalDir, { recursive: true });
  // Every model samples the same prompts with the same seed, so the grids compare image by image.
  const evaluate = (m: string, name: string) =>
    shapesworld(
      async (sc) =>
        (
          await sc.shapesworld.eval({
            modelDir: m,
            data: world,
            n: p.evalN,
            nUnd: p.evalUnd,
            samples: p.evalSamples,
            sampleSeed: 0,
            grid: join(evalDir, `${name}-grid.png`),
            gridN: GRID_N,
          })
        ).args,
      o.signal,
    );
  const beforePath = join(evalDir, 'pretrained.json');
  if (!evalDone(beforePath, p)) {
    log('[3/5] evaluating the pretrained model on held-out items');
    writeJsonAtomic(beforePath, await evaluate(model, 'pretrained'), 2);
  } else log('[3/5] pretrained model already evaluated');
  const before = readJson<EvalResult>(beforePath);
  check();

  // 4. PairGRPO on PairUG vs on random pairs, every seed, same recipe.
  const card = existsSync(join(model, 'pairuni_model.json'))
    ? readJson<Record<string, any>>(join(model, 'pairuni_model.json'))
    : {};
  const fmt = (card.prompt_format ?? card.format ?? {}) as Record<string, string>;
  const runs = Object.keys(pairSets).flatMap((variant) =>
    p.seeds.map((seed) => ({ variant: variant as 'pairgrpo' | 'random', seed })),
  );
  const runDir = (r: { variant: string; seed: number }) => join(out, 'runs', `${r.variant}-s${r.seed}`);
  log(
    `[4/5] PairGRPO: ${runs.length} runs × ${p.steps} steps (${p.batchPairs} pairs/step, K=${p.k} per side), ${o.parallel ?? 2} at a time`,
  );
  await pool(runs, o.parallel ?? 2, async (r) => {
    const cfgInput: TrainConfigInput = {
      data: join(pairSets[r.variant], 'pairs.jsonl'),
      out: runDir(r),
      model: {
        // The model card names the family (adapter) and, where it has no vision tower, what trains.
        adapter: typeof card.family === 'string' ? card.family : 'janus',
        path: model,
        gradientCheckpointing: false,
        // The tiny Janus was pretrained end to end; understanding needs its vision tower to move too.
        trainModules: (card.train_modules as string[] | undefined) ?? ['language_model', 'vision'],
        // The model card says how the model was trained to be prompted; fall back to its prompt format.
        options: {
          ...((card.adapter_options as Record<string, unknown> | undefined) ?? {
            ...(fmt.und_template ? { und_template: fmt.und_template.replace('{text}', '{question}') } : {}),
            ...(fmt.gen_template ? { gen_template: fmt.gen_template } : {}),
          }),
          ...p.modelOptions,
        },
      },
      // The baseline trains its random pairs at full weight (eq. 2): with √s_p its near-zero
      // similarities would all but switch learning off, which would not be a fair comparison.
      mode: r.variant === 'pairgrpo' ? 'pairgrpo' : 'pair',
      steps: p.steps,
      batchPairs: p.batchPairs,
      seed: r.seed,
      und: {
        k: p.k,
        maxNewTokens: typeof card.answer_slots === 'number' ? card.answer_slots : 16,
        instruction: fmt.instruction ? `{question}\n{choices}\n${fmt.instruction}` : undefined,
      },
      gen: { k: p.k, cfgWeight: 3, reward: { name: 'shapes', config: {} }, ...p.gen },
      ...(Object.keys(p.loss).length ? { loss: p.loss } : {}),
      optim: { lr: p.lr, microBatch: 16 },
      // grad_cos every step: the paper's mechanism (§2.2, Fig. 8) is that aligned pairs raise the cosine
      // between the understanding and generation gradients; the report compares it between the arms.
      log: { sampleEvery: Math.max(1, p.steps), gradCosine: true },
      ...(o.evalEvery ? { eval: { every: o.evalEvery, data: heldOut, samples: EVAL_DURING_N } } : {}),
      ...(o.loggers ? { loggers: o.loggers } : {}),
      checkpoint: { every: Math.max(1, Math.floor(p.steps / 2)), keep: 1 },
      sidecar: { threads: 1 },
    };
    const cfg = parseTrainConfig(JSON.parse(JSON.stringify(cfgInput)));
    const done = latestCheckpoint(cfg.out);
    if (done && done.state.step >= p.steps) {
      log(`  ${r.variant} seed ${r.seed}: already trained`);
      return;
    }
    log(`  ${r.variant} seed ${r.seed}: training`);
    await train(cfg, {
      resume: Boolean(done),
      signal: o.signal,
      onStep: (m) => o.onStep?.(`${r.variant}-s${r.seed}`, m.step, p.steps, runs.length), // m.step counts completed steps
    });
  });
  check();

  // 5. Evaluate every final policy; write the report.
  const after: DemoResult['after'] = { pairgrpo: {}, random: {} };
  // Side by side like the training runs: each evaluation is a single-threaded sidecar of its own.
  await pool(runs, o.parallel ?? 2, async (r) => {
    const path = join(evalDir, `${r.variant}-s${r.seed}.json`);
    if (evalDone(path, p)) return;
    const ck = latestCheckpoint(runDir(r));
    if (!ck) throw new PairuniError('demo', `run ${runDir(r)} has no checkpoint to evaluate`);
    log(`[5/5] evaluating ${r.variant} seed ${r.seed}`);
    writeJsonAtomic(path, await evaluate(join(ck.policyDir, 'model'), `${r.variant}-s${r.seed}`), 2);
  });
  for (const r of runs) after[r.variant][r.seed] = readJson<EvalResult>(join(evalDir, `${r.variant}-s${r.seed}.json`));
  const cosBySeed = { pairgrpo: {}, random: {} } as Record<'pairgrpo' | 'random', Record<number, number>>;
  for (const r of runs) cosBySeed[r.variant][r.seed] = meanGradCos(runDir(r));
  const summary = Object.fromEntries(
    (['pairgrpo', 'random'] as const).map((v) => {
      const rs = Object.values(after[v]);
      const arm = (xs: number[]): ArmStat => ({ ...meanCI(xs), std: meanStd(xs).std });
      return [
        v,
        {
          und: arm(rs.map((x) => x.und_accuracy)),
          gen: arm(rs.map((x) => x.gen_reward)),
          gradCos: arm(Object.values(cosBySeed[v])),
        },
      ];
    }),
  ) as DemoResult['summary'];
  const bySeed = (v: 'pairgrpo' | 'random', key: 'und_accuracy' | 'gen_reward') =>
    Object.fromEntries(Object.entries(after[v]).map(([seed, e]) => [seed, e[key]]));
  const paired: DemoResult['paired'] = {
    und: pairedDiffCI(bySeed('pairgrpo', 'und_accuracy'), bySeed('random', 'und_accuracy')),
    gen: pairedDiffCI(bySeed('pairgrpo', 'gen_reward'), bySeed('random', 'gen_reward')),
    gradCos: pairedDiffCI(cosBySeed.pairgrpo, cosBySeed.random),
  };
  const seconds = Math.round((Date.now() - t0) / 1000);
  const wall = addWallTime(out, seconds);
  const report = writeReport(
    out,
    p,
    before,
    after,
    summary,
    paired,
    runs.map((r) => ({ ...r, dir: runDir(r) })),
    wall,
    overlap,
  );
  log(`[5/5] report: ${report}`);
  return { report, before, after, summary, paired, overlap, seconds };
}

type SplitOverlap = OpReply<'shapesworld.overlap'>;

/** A run's mean und–gen gradient cosine over its logged steps (NaN when it logged none). */
export function meanGradCos(dir: string): number {
  const xs = (existsSync(join(dir, 'metrics.jsonl')) ? readMetrics(dir) : [])
    .map((m) => Number(m.grad_cos))
    .filter(Number.isFinite);
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

/** The report's statement of how held out the held-out items are (measured, not assumed). */
export function heldOut(o: SplitOverlap): string {
  const pool = o.pretrain
    ? `, and the model's pretraining pool (seed ${o.pretrain.seed}, ${o.pretrain.nItems} items)`
    : '';
  return (
    `Train/eval overlap, measured: **${o.uDuplicates} of ${o.uEval}** held-out understanding items equal a training item ` +
    `(same image pixels, question, choices and answer) and **${o.gVerbatim} of ${o.gEval}** held-out generation prompts ` +
    `(${o.gEvalDistinctPrompts} distinct) equal a training prompt; training = u_train, g_train (its prompts, MCQs and the U captions)${pool}. ` +
    'Generation is evaluated on reserved attribute combinations (shape×colour, count×shape, shape pairs, relations) ' +
    'and understanding on reserved scenes (object states in cells) that no training split can draw.' +
    (o.caveat ? ` **Not checked:** ${o.caveat}.` : '')
  );
}

function writeReport(
  out: string,
  p: Plan,
  before: EvalResult,
  after: DemoResult['after'],
  summary: DemoResult['summary'],
  paired: DemoResult['paired'],
  runs: Array<{ variant: 'pairgrpo' | 'random'; seed: number; dir: string }>,
  wall: { seconds: number; invocations: number },
  overlap: SplitOverlap,
): string {
  const pm = (x: MeanCI) => fmtCI(x);
  const d = (x: number, b: number) => `${x - b >= 0 ? '+' : ''}${(x - b).toFixed(3)}`;
  const cats = Object.keys(before.und_accuracy_by_category ?? {});
  const catMean = (v: 'pairgrpo' | 'random', key: 'und_accuracy_by_category' | 'gen_reward_by_category', c: string) =>
    meanStd(Object.values(after[v]).map((e) => e[key]?.[c] ?? NaN)).mean;
  const verdict = (c: MeanCI) =>
    !Number.isFinite(c.half)
      ? 'one seed: no interval'
      : c.lo > 0
        ? 'PairUG higher'
        : c.hi < 0
          ? 'PairUG lower'
          : 'no difference shown';
  const curves = (metric: keyof StepMetrics, label: string): string => {
    const series: Series[] = [];
    for (const r of runs) {
      const rows = existsSync(join(r.dir, 'metrics.jsonl')) ? readMetrics(r.dir) : [];
      const pts = rows
        .map((m) => [m.step, Number(m[metric])] as [number, number])
        .filter(([, y]) => Number.isFinite(y));
      series.push({ name: `${r.variant} s${r.seed}`, points: smooth(pts, 5) });
    }
    return lineChart(label, series, { yLabel: metric });
  };
  // Evaluations during training (`evalEvery`): eval.jsonl of each run, averaged over seeds per step.
  const duringTraining = (): string[] => {
    const evals = runs.map((r) => ({ ...r, rows: readEvals(r.dir) }));
    const steps = [...new Set(evals.flatMap((e) => e.rows.map((x) => x.step)))].sort((a, b) => a - b);
    if (!steps.length) return [];
    const at = (v: string, step: number, key: `eval/${string}`) => {
      const xs = evals
        .filter((e) => e.variant === v)
        .map((e) => e.rows.find((x) => x.step === step)?.[key])
        .filter((x): x is number => typeof x === 'number');
      return xs.length ? (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(3) : '–';
    };
    return [
      '## During training: held-out evaluations',
      '',
      `Every evaluation scores the current policy on the first ${EVAL_DURING_N} held-out pairs ` +
        '(`eval/und_acc`: one answer per question; `eval/gen_reward`: one image per prompt, the shapes reward), ' +
        'with the same seeds each time; mean over seeds. Per run: `runs/<variant>-s<seed>/eval.jsonl` and `eval/step-*.jsonl`.',
      '',
      mdTable(
        ['after step', 'und acc, PairUG', 'und acc, random', 'gen reward, PairUG', 'gen reward, random'],
        steps.map((st) => [
          String(st),
          at('pairgrpo', st, 'eval/und_acc'),
          at('random', st, 'eval/und_acc'),
          at('pairgrpo', st, 'eval/gen_reward'),
          at('random', st, 'eval/gen_reward'),
        ]),
      ),
      '',
    ];
  };
  const grids = runs
    .filter((r) => r.seed === p.seeds[0])
    .map((r) => {
      const dir = join(r.dir, 'samples');
      const files = existsSync(dir)
        ? readdirSync(dir)
            .filter((f) => f.endsWith('.png'))
            .sort()
        : [];
      return files.length
        ? `- ${r.variant} seed ${r.seed}, training rollouts at the last step: ![](${join('runs', `${r.variant}-s${r.seed}`, 'samples', files[files.length - 1])})`
        : '';
    })
    .filter(Boolean);
  // Before/after: the same held-out prompts, sampling seed and CFG for the pretrained model and each variant's first seed.
  const s0 = p.seeds[0];
  const gridOf = (e: EvalResult | undefined) =>
    e && typeof e.grid === 'string' && existsSync(e.grid) ? e.grid : undefined;
  const panels: Array<[string, EvalResult | undefined]> = [
    ['pretrained', before],
    [`PairGRPO on PairUG (seed ${s0})`, after.pairgrpo[s0]],
    [`PairGRPO on random pairs (seed ${s0})`, after.random[s0]],
  ];
  const prompts = (before.grid_prompts as string[] | undefined) ?? [];
  const beforeAfter = panels.every(([, e]) => gridOf(e))
    ? [
        ...panels.map(([name, e]) => `**${name}**: ![${name}](${relative(out, gridOf(e)!)})\n`),
        '',
        mdTable(
          ['#', 'held-out prompt', ...panels.map(([name]) => `reward: ${name.split(' (')[0]}`)],
          prompts.map((pr, i) => [
            String(i + 1),
            pr,
            ...panels.map(([, e]) => (e?.grid_rewards as number[] | undefined)?.[i] ?? NaN),
          ]),
        ),
        '',
        `Images in reading order (8 per row), the first sample of each prompt.`,
      ]
    : [
        '(before/after grids were not written: evaluations from an older version; delete the `eval` folder to redo them)',
      ];
  // Where the understanding change comes from, and which categories only measure a letter prior.
  const categoryNotes = (): string[] => {
    const und = (v: 'pairgrpo' | 'random') =>
      cats
        .map((c) => ({ c, d: catMean(v, 'und_accuracy_by_category', c) - (before.und_accuracy_by_category[c] ?? NaN) }))
        .filter((x) => Number.isFinite(x.d) && Math.abs(x.d) >= 0.005)
        .sort((a, b) => Math.abs(b.d) - Math.abs(a.d))
        .slice(0, 3)
        .map((x) => `${x.c} ${d(x.d, 0)}`)
        .join(', ') || 'none';
    const chance = cats.filter((c) => (before.und_accuracy_by_category[c] ?? 1) <= 0.3);
    return [
      '',
      `Largest understanding changes: PairUG ${und('pairgrpo')}; random pairs ${und('random')}.` +
        (chance.length
          ? ` The pretrained model answers ${chance.join(', ')} at about chance (4 options): there the accuracy of a greedy answer ` +
            'mostly measures which letter the policy prefers, not what it sees, and moves with the letter mix of the training questions.'
          : ''),
      '',
    ];
  };
  const lines = [
    '# PairUni demo on ShapesWorld',
    '',
    `Tiny ${p.family === 'dimoo' ? 'masked-diffusion DiMOO' : 'Janus'} pretrained on ShapesWorld, then PairGRPO for ${p.steps} steps (${p.batchPairs} pairs/step, K=${p.k} rollouts per side, lr ${p.lr}${recipeNote(p)}) `,
    `on **PairUG** (K-means medoids + retrieved pairs, w_p = 1 or √s_p; eq. 4) versus **random pairs** of the same size, same recipe, every pair at w_p = 1 (eq. 2), `,
    `seeds ${p.seeds.join(', ')}. Held-out: ${before.n_und ?? p.evalUnd} understanding items, ${before.n_gen_prompts ?? p.evalN} generation prompts × ${p.evalSamples} samples. ` +
      `Wall time ${wall.seconds} s${wall.invocations > 1 ? ` over ${wall.invocations} invocations (interrupted and resumed, or rerun)` : ''}.`,
    '',
    heldOut(overlap),
    '',
    `## Result (mean ± 95% CI half-width [interval] over ${p.seeds.length} seed(s), t-distribution with n − 1 df)`,
    '',
    mdTable(
      ['', 'understanding accuracy', 'Δ vs pretrained', 'generation reward', 'Δ vs pretrained'],
      [
        ['pretrained', before.und_accuracy.toFixed(3), '', before.gen_reward.toFixed(3), ''],
        [
          'PairGRPO on PairUG',
          pm(summary.pairgrpo.und),
          d(summary.pairgrpo.und.mean, before.und_accuracy),
          pm(summary.pairgrpo.gen),
          d(summary.pairgrpo.gen.mean, before.gen_reward),
        ],
        [
          'PairGRPO on random pairs',
          pm(summary.random.und),
          d(summary.random.und.mean, before.und_accuracy),
          pm(summary.random.gen),
          d(summary.random.gen.mean, before.gen_reward),
        ],
      ],
    ),
    '',
    mdTable(
      ['PairUG − random, paired by seed', 'difference ± 95% CI [interval]', 'verdict at 95%'],
      (['und', 'gen'] as const).map((side) => [
        side === 'und' ? 'understanding accuracy' : 'generation reward',
        fmtCI(paired[side], 3, true),
        verdict(paired[side]),
      ]),
    ),
    '',
    `Each seed trains both arms on the same seed, so the difference is taken per seed and its spread is the spread of ` +
      `the ${paired.und.n} per-seed differences. An interval that contains 0 shows no difference at this number of seeds.`,
    '',
    '## Per category (mean over seeds)',
    '',
    mdTable(
      ['category', 'und: pretrained', 'und: PairUG', 'und: random', 'gen: pretrained', 'gen: PairUG', 'gen: random'],
      cats.map((c) => [
        c,
        before.und_accuracy_by_category[c] ?? NaN,
        catMean('pairgrpo', 'und_accuracy_by_category', c),
        catMean('random', 'und_accuracy_by_category', c),
        before.gen_reward_by_category?.[c] ?? NaN,
        catMean('pairgrpo', 'gen_reward_by_category', c),
        catMean('random', 'gen_reward_by_category', c),
      ]),
    ),
    '',
    ...categoryNotes(),
    '## Mechanism: cosine between the understanding and generation gradients (paper §2.2, Fig. 8)',
    '',
    'Each step logs the cosine between the gradient of the understanding loss and that of the generation loss over ' +
      "the same update (`grad_cos`). The paper's argument for PairGRPO is that aligned pairs raise it; per run it is " +
      'averaged over the steps, then over seeds as above.',
    '',
    mdTable(
      ['', 'mean und–gen gradient cosine ± 95% CI [interval]'],
      [
        ['PairGRPO on PairUG', pm(summary.pairgrpo.gradCos)],
        ['PairGRPO on random pairs', pm(summary.random.gradCos)],
        ['PairUG − random, paired by seed', `${fmtCI(paired.gradCos, 3, true)} (${verdict(paired.gradCos)})`],
      ],
    ),
    '',
    curves('grad_cos', 'und–gen gradient cosine per step'),
    '',
    ...duringTraining(),
    '## Training curves (5-step moving average)',
    '',
    curves('und/reward', 'understanding reward (train rollouts)'),
    '',
    curves('gen/reward', 'generation reward (train rollouts)'),
    '',
    '## Before / after: generated images for the same held-out prompts',
    '',
    ...beforeAfter,
    '',
    '## Training samples',
    '',
    ...(grids.length ? grids : ['(no sample grids were written)']),
    '',
    '## Per run',
    '',
    mdTable(
      ['run', 'und accuracy', 'gen reward', 'gen binary'],
      runs.map((r) => [
        `${r.variant} s${r.seed}`,
        after[r.variant][r.seed].und_accuracy,
        after[r.variant][r.seed].gen_reward,
        after[r.variant][r.seed].gen_binary,
      ]),
    ),
    '',
  ];
  const path = join(out, 'report.md');
  writeFileAtomic(path, lines.join('\n'));
  writeJsonAtomic(
    join(out, 'summary.json'),
    { before, after, summary, paired, overlap, wallSeconds: wall.seconds, invocations: wall.invocations, plan: p },
    2,
  );
  return path;
}
