/**
 * The PairGRPO training loop (PairUni §2.2, Algorithm: pair batch → rollouts on both sides → rewards
 * → per-(pair, side) group advantages × w_p → μ clipped-surrogate updates).
 *
 * Heavy tensors never leave the sidecar: rollouts (token ids, log-probs, images) stay there under
 * handles; the controller moves texts (to score answers), rewards and advantages (B floats), and
 * metrics. Every step's randomness derives from (seed, step, part), so `resume` and sidecar restarts
 * continue bit for bit.
 *
 * Data parallel (`sidecar.ranks` > 1): the batch is cut into `parallel.parts` parts of whole pairs
 * (src/train/parts.ts); each rank rolls out its parts, the controller gathers texts and rewards,
 * computes every advantage here as with one rank, and sends each rank its slice; torch.distributed
 * (FSDP2) synchronises the gradients inside `train.update`.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { AbortedError, ConfigError, PairuniError, RewardError, SidecarError } from '../errors.js';
import { familyOptions } from '../contract/families/index.js';
import { GenSampling, type OpArgs, UndSampling, type UpdateMetrics, UpdateLoss } from '../contract/ops.js';
import { declaredOf } from '../contract/wire.js';
import { rewardTerms } from '../contract/reward-config.js';
import { isPaired, lossNorm, sideAdvantages, trainWeight } from '../grpo/advantages.js';
import { renderQuestion, undReward } from '../grpo/rewards.js';
import { Sidecar, Tensor } from '../sidecar/index.js';
import { writeJsonAtomic } from '../util/atomic.js';
import { createLogger, type LogOptions, sidecarLineLevel } from '../util/log.js';
import {
  assertResumable,
  assertUsableOut,
  type Checkpoint,
  latestCheckpoint,
  removeStaleTemps,
  RunStateError,
  type SkippedCheckpoint,
  writeCheckpoint,
} from './checkpoint.js';
import { parseTrainConfig, type TrainConfig, type TrainConfigInput } from './config.js';
import { type RewardCallback, scoreSide, sidecarGenInputs, type SideRewards } from './reward-sources.js';
import { loadPairUG, stepIndices, type TrainPair } from './data.js';
import { readEvals, RunLog, type PairGrpoStepMetrics, type RewardTermMetrics, type StepMetrics } from './metrics.js';
import { evalDue, evaluatePolicy } from './evaluate.js';
import { type ExperimentSink, Sinks } from './sinks.js';
import { isTrackerLogger, PythonSinks } from './python-sinks.js';
import { checkParts, mergeUpdateMetrics, partOf, partSeed, rankParts } from './parts.js';
import { sftStep } from './sft.js';

/**
 * Whether an `onLog` line is one of the trainer's own notices (a restart, a skipped checkpoint, removed
 * temps) rather than a line of the sidecar's stderr: a command line shows those only, since a failure
 * reaches the user as its typed error and a traceback before it would repeat it less clearly.
 */
export const isTrainerNotice = (line: string): boolean => line.startsWith('pairuni train:');

/**
 * Options of {@link train} beyond the config: cancellation, resume, callbacks, a custom sidecar.
 * `logger` / `logLevel`: the trainer's notices (a restart: warn; a skipped checkpoint: warn; removed
 * temps: info) and every line of the sidecar's stderr (at the level it carries, see `Sidecar.spawn`).
 */
export interface TrainOptions extends LogOptions {
  /** Stops at the next step boundary, saves a checkpoint, then rejects with AbortedError. */
  signal?: AbortSignal;
  /** Continue from `<out>/checkpoints/latest` (the config may change only in steps/out/log/loggers/eval/checkpoint/sidecar). */
  resume?: boolean;
  /** Called after each step is logged. */
  onStep?: (m: StepMetrics, ctx: { sidecar: Sidecar; config: TrainConfig }) => void | Promise<void>;
  /**
   * Sidecar stderr lines and trainer notices, as text. Given without `logger`, it takes them instead of
   * the logger (the behaviour before `logger` existed); with `logger`, both receive them.
   */
  onLog?: (line: string) => void;
  /** Replaces the built-in accuracy reward of the understanding side (must return a finite number). */
  undReward?: (completion: string, pair: TrainPair) => number;
  /**
   * The functions `{ callback: name }` reward sources name (docs/training.md#reward-sources): each gets
   * a side's whole batch and returns one finite reward per item.
   */
  rewards?: Readonly<Record<string, RewardCallback>>;
  /** Experiment trackers to report to besides those of `config.loggers` (docs/training.md#experiment-sinks). */
  sinks?: readonly ExperimentSink[];
  /** How to start a sidecar (default: `Sidecar.spawn` with `config.sidecar`). Called again after a crash. */
  spawn?: () => Promise<Sidecar>;
}

/** How a {@link train} run ended. */
export interface TrainResult {
  /** Completed steps (equals config.steps when the run finished). */
  steps: number;
  /** Directory of the last checkpoint saved, if any. */
  checkpoint?: string;
  /** Metrics of the last step. */
  last?: StepMetrics;
  /** Sidecar restarts after a crash during the run. */
  restarts: number;
}

export { RunStateError };

/** Per-step seeds: sampling per side, the estimator seed per inner iteration (dLLM-style adapters). */
export function stepSeed(seed: number, step: number, what: 'und' | 'gen' | number): number {
  const k = what === 'und' ? 1 : what === 'gen' ? 2 : 3 + what;
  return Number(((BigInt(seed) * 1_000_003n + BigInt(step)) * 4096n + BigInt(k)) % 2_147_483_647n);
}

/** `train.load` arguments for a config (optionally resuming from a checkpoint's policy dir). */
export function loadArgs(cfg: TrainConfig, resumeDir?: string): OpArgs<'train.load'> {
  const { refPath: _ref, ...model } = cfg.model;
  return {
    model: { ...model, options: familyOptions(model.adapter, 'load', model.options) },
    optim: cfg.optim,
    seed: cfg.seed,
    ...(cfg.loss.beta > 0 ? { refModelDir: cfg.model.refPath ?? cfg.model.path } : {}),
    ...(resumeDir ? { resumeDir } : {}),
  };
}

/** Which PairGRPO sides run, decided from what the loaded adapter declares it can do. */
export function grpoSides(caps: readonly string[]): { und: boolean; gen: boolean } {
  const sides = {
    und: caps.includes('und_rollout') && caps.includes('logprobs_und'),
    gen: caps.includes('gen_rollout') && caps.includes('logprobs_gen'),
  };
  if (!sides.und && !sides.gen) {
    throw new ConfigError(
      `the adapter declares [${caps.join(', ')}]: it can roll out and score neither side, so PairGRPO cannot train it${caps.includes('sft') ? ' (it supports supervised fine-tuning: train.sft)' : ''}`,
    );
  }
  return sides;
}

/**
 * How the loaded adapter trains, from what it declares: PairGRPO on the sides it can roll out and
 * score; supervised fine-tuning (`train.sft`, pair batches 1:1) when it rolls out neither but has `sft`.
 */
export type TrainMode = { kind: 'pairgrpo'; sides: { und: boolean; gen: boolean } } | { kind: 'sft' };

/** The `TrainMode` of a loaded policy, from the capabilities `train.load` replied with. */
export function trainMode(caps: readonly string[]): TrainMode {
  const canRoll =
    (caps.includes('und_rollout') && caps.includes('logprobs_und')) ||
    (caps.includes('gen_rollout') && caps.includes('logprobs_gen'));
  if (!canRoll && caps.includes('sft')) return { kind: 'sft' };
  return { kind: 'pairgrpo', sides: grpoSides(caps) };
}

interface Times {
  rollout: number;
  reward: number;
  update: number;
  transport: number;
}

/** Seconds inside an op: `elapsedS` of a reply, `elapsed_s` of a metric record (`train.update`: names as logged). */
type Timed = { args: { elapsedS: number } | { elapsed_s: number } };
const inside = (r: Timed): number => ('elapsedS' in r.args ? r.args.elapsedS : r.args.elapsed_s);

/** Books a sidecar call's time: inside the op (its reply's elapsed seconds) and on the wire. */
async function timed<R extends Timed>(
  times: Times,
  kind: keyof Omit<Times, 'transport'>,
  call: Promise<R>,
): Promise<R> {
  const t0 = performance.now();
  const r = await call;
  const wall = (performance.now() - t0) / 1000;
  times[kind] += inside(r);
  times.transport += Math.max(0, wall - inside(r));
  return r;
}

/** Books a world call's time: the slowest rank's time inside the op, the rest is transport. */
async function timedAll<R extends Timed>(
  times: Times,
  call: Promise<R[]>,
  kind: keyof Omit<Times, 'transport'> = 'rollout',
): Promise<R[]> {
  const t0 = performance.now();
  const rs = await call;
  const wall = (performance.now() - t0) / 1000;
  const slowest = Math.max(...rs.map(inside));
  times[kind] += slowest;
  times.transport += Math.max(0, wall - slowest);
  return rs;
}

const mean = (a: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  return a.length ? s / a.length : 0;
};
const std = (a: ArrayLike<number>) => {
  const m = mean(a);
  return Math.sqrt(mean(Array.from(a, (x) => (x - m) ** 2)));
};
const meanAbs = (a: ArrayLike<number>) => mean(Array.from(a, Math.abs));

/** `<side>/reward/<key>`: the mean of each term of a weighted sum (a single source is `<side>/reward` itself). */
function termMeans(
  side: 'und' | 'gen',
  cfg: TrainConfig['gen']['reward'] | undefined,
  r: SideRewards,
): RewardTermMetrics {
  if (!cfg || !('sum' in cfg)) return {};
  return Object.fromEntries(Object.entries(r.terms).map(([k, v]) => [`${side}/reward/${k}`, mean(v)]));
}

/**
 * One PairGRPO step on the sidecar's policy. Returns the step's metrics; `step` is the 0-based index
 * of the step being run (the metrics row carries step + 1, the number of completed steps).
 */
export async function pairGrpoStep(
  sc: Sidecar,
  cfg: TrainConfig,
  pairs: readonly TrainPair[],
  step: number,
  opts: Pick<TrainOptions, 'undReward' | 'rewards' | 'signal'> & {
    samplePath?: string;
    sides?: { und: boolean; gen: boolean };
  } = {},
): Promise<PairGrpoStepMetrics & RewardTermMetrics> {
  const t0 = performance.now();
  const times: Times = { rollout: 0, reward: 0, update: 0, transport: 0 };
  const { und: U, gen: G, mode } = cfg;
  const sides = opts.sides ?? { und: true, gen: true };

  // 1. The batch. Paired modes: B pairs, both sides of each pair. Vanilla (eq. 1): B understanding
  //    items and B generation items drawn independently, i.e. an unpaired mixed batch.
  const { indices: uIdx, epoch } = stepIndices(pairs.length, cfg.batchPairs, step, cfg.seed, 0);
  const gIdx = isPaired(mode) ? uIdx : stepIndices(pairs.length, cfg.batchPairs, step, cfg.seed, 1).indices;
  const uPairs = sides.und ? uIdx.map((i) => pairs[i]) : [];
  const gPairs = sides.gen ? gIdx.map((i) => pairs[i]) : [];
  const P = cfg.parallel.parts ?? 1;
  const world = sc.world;
  checkParts(P, world, cfg.batchPairs, cfg.log.gradCosine);
  const mine = (r: number) => rankParts(P, world, r);

  const estSeeds = Array.from({ length: cfg.loss.mu }, (_, inner) => stepSeed(cfg.seed, step, inner));
  // 2. Rollouts: K_u answers per (image, question), K_g images per prompt. They stay in the sidecar.
  //    Sampling settings travel as the config declares them (src/contract/ops.ts), plus the part's
  //    seed. Round k: rank r rolls out part r + k·world (a world op: every rank, one order).
  type Rollout = { handle: string; size: number; tokens: number; lengths: number[]; texts?: string[] };
  const rolloutParts = async (side: 'und' | 'gen'): Promise<Rollout[]> => {
    const out: Rollout[] = new Array(P);
    for (let k = 0; k < P / world; k++) {
      const rs =
        side === 'und'
          ? await timedAll(
              times,
              sc.all('train.und_rollout', (r) => ({
                n: U.k,
                items: partOf(uPairs, P, mine(r)[k]).map((p) => ({
                  imagePath: p.u_image_abs,
                  text: renderQuestion(p.question, p.choices, U.instruction),
                })),
                sampling: {
                  ...declaredOf(UndSampling, U),
                  options: familyOptions(cfg.model.adapter, 'und', U.options),
                  seed: partSeed(stepSeed(cfg.seed, step, 'und'), mine(r)[k]),
                  estSeeds,
                },
              })),
            )
          : await timedAll(
              times,
              sc.all('train.gen_rollout', (r) => ({
                n: G.k,
                items: partOf(gPairs, P, mine(r)[k]).map((p) => ({ prompt: p.prompt })),
                sampling: {
                  ...declaredOf(GenSampling, G),
                  options: familyOptions(cfg.model.adapter, 'gen', G.options),
                  seed: partSeed(stepSeed(cfg.seed, step, 'gen'), mine(r)[k]),
                  estSeeds,
                },
              })),
            );
      rs.forEach((x, r) => (out[mine(r)[k]] = x.args));
    }
    return out;
  };
  const und = sides.und ? await rolloutParts('und') : undefined;
  const gen = sides.gen ? await rolloutParts('gen') : undefined;
  const handleOf = (ro: Rollout[] | undefined, r: number) => (ro ? mine(r).map((p) => ro[p].handle) : undefined);
  const texts = und?.flatMap((x) => x.texts ?? []) ?? [];
  const genSize = gen?.reduce((a, x) => a + x.size, 0) ?? 0;
  if (texts.length !== uPairs.length * U.k || genSize !== gPairs.length * G.k) {
    throw new PairuniError(
      'rollout',
      `sidecar returned ${texts.length} answers / ${genSize} images for ${uPairs.length}×${U.k} / ${gPairs.length}×${G.k}`,
    );
  }

  let freed = false;
  try {
    // 3. Rewards from each side's sources (src/train/reward-sources.ts): the built-in accuracy here,
    //    plug-ins on the rank that holds the images (a per-rank op: the images stay there), callbacks
    //    and servers with the images fetched once. Time spent here in TS books as reward time.
    const parts = texts.map((t, i) => undReward(t, uPairs[Math.floor(i / U.k)].answer, U.formatWeight));
    const ctx = { callbacks: opts.rewards, signal: opts.signal };
    const scoreTimed = async (fn: () => Promise<SideRewards>) => {
      const before = times.reward + times.transport;
      const t1 = performance.now();
      const r = await fn();
      times.reward += Math.max(0, (performance.now() - t1) / 1000 - (times.reward + times.transport - before));
      return r;
    };
    const none: SideRewards = { total: new Float32Array(0), terms: {} };
    const itemPairs = (ps: TrainPair[], k: number, n: number) =>
      Array.from({ length: n }, (_, i) => ps[Math.floor(i / k)]);
    const scoredU = sides.und
      ? await scoreTimed(() =>
          scoreSide(
            U.reward ?? { builtin: 'accuracy' },
            {
              side: 'und',
              step,
              pairs: itemPairs(uPairs, U.k, texts.length),
              completions: texts,
              questions: texts.map((_, i) => {
                const p = uPairs[Math.floor(i / U.k)];
                return renderQuestion(p.question, p.choices, U.instruction);
              }),
              builtin: () =>
                Float32Array.from(
                  opts.undReward
                    ? texts.map((t, i) => opts.undReward!(t, uPairs[Math.floor(i / U.k)]))
                    : parts.map((p) => p.reward),
                ),
            },
            ctx,
          ),
        )
      : none;
    const scoredG = gen
      ? await scoreTimed(() =>
          scoreSide(
            G.reward,
            sidecarGenInputs(
              sc,
              gen.map((x, p) => ({ handle: x.handle, rank: p % world })),
              step,
              itemPairs(gPairs, G.k, genSize),
              (c) => timed(times, 'reward', c),
            ),
            ctx,
          ),
        )
      : none;
    const rU = scoredU.total;
    const rG = scoredG.total;

    // 4. Advantages (eq. 1–4): normalise within each (pair, side) group, then scale by w_p.
    const wU = uPairs.map((p) => trainWeight(mode, p));
    const wG = gPairs.map((p) => trainWeight(mode, p));
    const norm = { std: cfg.advantage.std, eps: cfg.advantage.eps };
    const aU = sideAdvantages(
      rU,
      U.k,
      wU,
      norm,
      uPairs.map((p) => `pair ${p.pair_id} (understanding)`),
    );
    const aG = sideAdvantages(
      rG,
      G.k,
      wG,
      norm,
      gPairs.map((p) => `pair ${p.pair_id} (generation)`),
    );

    if (opts.samplePath && gen) {
      await sc.train.grid({ handle: gen[0].handle, path: opts.samplePath, nrow: G.k, maxImages: 4 * G.k });
    }

    // 5. μ optimizer steps of the clipped surrogate on the same rollouts (computed in the sidecar);
    //    the last one also frees the rollouts. Each rank gets its parts' advantages, in its order.
    const updates: UpdateMetrics[] = [];
    const slice = (a: Float32Array, perPart: number, r: number) =>
      Float32Array.from(mine(r).flatMap((p) => Array.from(a.subarray(p * perPart, (p + 1) * perPart))));
    const adv = (r: number): Record<string, Tensor> => ({
      ...(und ? { adv_und: Tensor.from(slice(aU.adv, aU.adv.length / P, r)) } : {}),
      ...(gen ? { adv_gen: Tensor.from(slice(aG.adv, aG.adv.length / P, r)) } : {}),
    });
    for (let inner = 0; inner < cfg.loss.mu; inner++) {
      const rs = await timedAll(
        times,
        sc.all(
          'train.update',
          (r) => ({
            handles: { und: handleOf(und, r), gen: handleOf(gen, r) },
            loss: { ...declaredOf(UpdateLoss, cfg.loss), norm: lossNorm(mode) },
            estSeed: estSeeds[inner],
            gradCosine: cfg.log.gradCosine,
            free: inner === cfg.loss.mu - 1,
          }),
          adv,
        ),
        'update',
      );
      updates.push(mergeUpdateMetrics(rs.map((x) => x.args)));
    }
    freed = true;

    // 6. Metrics.
    const avgUpd = (k: keyof UpdateMetrics) =>
      mean(updates.map((u) => u[k]).filter((x): x is number => typeof x === 'number'));
    const rolloutTokens = [...(und ?? []), ...(gen ?? [])].reduce((a, x) => a + x.tokens, 0);
    const stepTime = (performance.now() - t0) / 1000;
    const ws = [...new Set([...uPairs, ...gPairs])];
    const maxAbs = (a: ArrayLike<number>) => (a.length ? Math.max(...Array.from(a, Math.abs)) : 0);
    const m: PairGrpoStepMetrics & RewardTermMetrics = {
      step: step + 1,
      epoch,
      ...termMeans('und', U.reward, scoredU),
      'und/reward': mean(rU),
      'und/reward_std': std(rU),
      'und/acc': mean(parts.map((p) => (p.correct ? 1 : 0))),
      'und/format': mean(parts.map((p) => (p.format ? 1 : 0))),
      'und/len_mean': mean(und?.flatMap((x) => x.lengths) ?? []),
      'und/zero_groups': aU.zeroGroups,
      ...termMeans('gen', G.reward, scoredG),
      'gen/reward': mean(rG),
      'gen/reward_std': std(rG),
      'gen/zero_groups': aG.zeroGroups,
      'adv/und_mean_abs': meanAbs(aU.adv),
      'adv/gen_mean_abs': meanAbs(aG.adv),
      'adv/und_max_abs': maxAbs(aU.adv),
      'adv/gen_max_abs': maxAbs(aG.adv),
      'wp/mean': mean([...wU, ...wG]),
      'wp/min': Math.min(...wU, ...wG),
      'wp/max': Math.max(...wU, ...wG),
      'wp/retrieved_frac': mean(ws.map((p) => (p.type === 'retrieved' ? 1 : 0))),
      loss: avgUpd('loss'),
      'und/clip_frac': avgUpd('und/clip_frac'),
      'gen/clip_frac': avgUpd('gen/clip_frac'),
      'und/ratio_mean': avgUpd('und/ratio_mean'),
      'gen/ratio_mean': avgUpd('gen/ratio_mean'),
      'kl/old': mean([avgUpd('und/kl_old'), avgUpd('gen/kl_old')]),
      grad_norm: avgUpd('grad_norm'),
      lr: avgUpd('lr'),
      'tokens/rollout': rolloutTokens,
      'tokens/update': avgUpd('update_tokens'),
      tokens_per_s: times.rollout > 0 ? rolloutTokens / times.rollout : 0,
      'time/rollout': times.rollout,
      'time/reward': times.reward,
      'time/update': times.update,
      'time/transport': times.transport,
      'time/step': stepTime,
    };
    if (cfg.loss.beta > 0) m['kl/ref'] = mean([avgUpd('und/kl_ref'), avgUpd('gen/kl_ref')]);
    if (cfg.log.gradCosine) m.grad_cos = avgUpd('grad_cos');
    return m;
  } finally {
    // After an error the rollouts are dropped here (a dead sidecar took them with it anyway).
    if (!freed) {
      for (let r = 0; r < world; r++) {
        const live = [...(handleOf(und, r) ?? []), ...(handleOf(gen, r) ?? [])];
        if (live.length) await sc.handles.free({ handles: live }, {}, { rank: r }).catch(() => undefined);
      }
    }
  }
}

/** Starts (or restarts) a sidecar and loads the policy, resuming from `ck` when given. */
async function startPolicy(
  cfg: TrainConfig,
  opts: TrainOptions,
  ck: Checkpoint | undefined,
): Promise<{ sc: Sidecar; mode: TrainMode }> {
  const stopped = () =>
    new AbortedError(
      `training stopped at step ${ck?.state.step ?? 0}/${cfg.steps} while the sidecar started; ${ck ? `checkpoint ${ck.dir}` : 'nothing saved yet'}`,
    );
  let sc: Sidecar;
  try {
    sc = opts.spawn
      ? await opts.spawn()
      : await Sidecar.spawn({
          python: cfg.sidecar.python,
          threads: cfg.sidecar.threads,
          plugins: cfg.sidecar.plugins,
          onLog: opts.onLog,
          logger: opts.logger,
          logLevel: opts.logLevel,
          ranks: cfg.sidecar.ranks,
          maxRestarts: cfg.sidecar.maxRestarts,
          signal: opts.signal,
        });
  } catch (e) {
    throw e instanceof AbortedError ? stopped() : e;
  }
  try {
    // A Ctrl-C during the start stops here, before the run directory is touched.
    if (opts.signal?.aborted) throw stopped();
    const mode = await loadPolicy(sc, cfg, ck);
    if (opts.signal?.aborted) throw stopped();
    return { sc, mode };
  } catch (e) {
    await sc.close().catch(() => undefined);
    throw e;
  }
}

/** Loads the policy on every rank (resuming from `ck`) and builds the reward model on each. */
async function loadPolicy(sc: Sidecar, cfg: TrainConfig, ck: Checkpoint | undefined): Promise<TrainMode> {
  const loaded = await sc.train.load(loadArgs(cfg, ck?.policyDir));
  const mode = trainMode(loaded.args.capabilities);
  // every rank scores its own images: each builds the reward model (fails early if it cannot)
  if (mode.kind === 'pairgrpo' && mode.sides.gen) {
    for (const { source } of rewardTerms(cfg.gen.reward, 'gen')) {
      if (!('name' in source)) continue;
      for (let r = 0; r < sc.world; r++) await sc.train.prepareReward({ reward: source }, {}, { rank: r });
    }
  }
  return mode;
}

const isRankLost = (e: unknown) => e instanceof SidecarError && e.code === 'rank_lost';

/**
 * Trains `cfg.steps` steps: PairGRPO, or supervised steps for an adapter that only declares `sft`
 * (`trainMode`). Checks that `cfg.out` can be a run directory before starting a
 * sidecar, and validates the data, loads the policy and the reward model before writing anything to
 * it (then first removes what interrupted writes left there: `removeStaleTemps`); checkpoints every
 * `cfg.checkpoint.every` steps, at the end, and when stopped through `opts.signal`; restarts a dead
 * sidecar from the latest checkpoint. Every failure after the sidecar started closes it.
 * `config` is what `parseTrainConfig` takes (checked here the same way) or what it returned.
 */
export async function train(config: TrainConfigInput, opts: TrainOptions = {}): Promise<TrainResult> {
  // A parsed config parses to itself (its paths already absolute, its defaults filled), so either form may be given.
  const cfg = parseTrainConfig(config);
  const logger = createLogger(opts);
  const log = (s: string, level: 'info' | 'warn' | 'error' = 'warn') => {
    opts.onLog?.(s);
    if (opts.logger || !opts.onLog) logger[level](s);
  };
  assertUsableOut(cfg.out);
  const missing = (['und', 'gen'] as const).flatMap((side) => {
    const rc = cfg[side].reward;
    return rc
      ? rewardTerms(rc, side).flatMap(({ source }) =>
          'callback' in source && !opts.rewards?.[source.callback]
            ? [`${side}.reward names callback '${source.callback}'`]
            : [],
        )
      : [];
  });
  if (missing.length)
    throw new ConfigError(`${missing.join('; ')}, but train() got no such function in options.rewards`);
  const pairs = loadPairUG(cfg.data);
  const held = cfg.eval.every > 0 ? loadPairUG(cfg.eval.data!) : [];
  // A damaged newer checkpoint is passed over for the one before it: say so, since its steps will be redone.
  const skipped = ({ dir, reason }: SkippedCheckpoint) =>
    log(`pairuni train: warning: skipping checkpoint ${dir}: ${reason}`);
  let ck = latestCheckpoint(cfg.out, skipped);
  if (opts.resume) {
    if (!ck) {
      const msg = (drop: string) =>
        `nothing to resume: ${cfg.out} has no complete checkpoint (${drop} to start a new run there)`;
      throw new RunStateError(msg('leave out `resume`'), { cliMessage: msg('leave out --resume') });
    }
    assertResumable(ck.state.config, cfg);
  } else if (ck) {
    const msg = (resume: string, out: string) =>
      `${cfg.out} already holds a run (checkpoint ${ck!.dir}); pass ${resume} to continue it, or choose another ${out}`;
    throw new RunStateError(msg('`resume: true`', '`out`'), { cliMessage: msg('--resume', '--out') });
  }
  let step = ck?.state.step ?? 0;
  let restarts = ck?.state.restarts ?? 0;
  let { sc, mode } = await startPolicy(cfg, opts, ck);
  let epoch = sc.epoch; // torchrun's restart count of the world the policy is loaded on
  // From here on every exit goes through the `finally` below, which closes the sidecar.
  let runLog: RunLog | undefined;
  // W&B and MLflow run in one child process on this host, next to the user's own sinks
  const trackers = (cfg.loggers ?? []).filter(isTrackerLogger);
  const trackerLine = (line: string) => {
    const m = /^\[pairuni-sidecar [^\]]*\] (warn|error): (.*)$/.exec(line);
    if (m) return log(`pairuni train: ${m[2]}`, m[1] as 'warn' | 'error');
    opts.onLog?.(line);
    if (opts.logger || !opts.onLog) logger[sidecarLineLevel(line)](line);
  };
  const sinks = new Sinks([
    ...(trackers.length
      ? [
          new PythonSinks(trackers, {
            python: cfg.sidecar.python,
            onLine: trackerLine,
            onNotice: (t) => log(`pairuni train: ${t}`, 'info'),
          }),
        ]
      : []),
    ...(opts.sinks ?? []),
  ]);
  let savedStep = step;
  let last: StepMetrics | undefined;
  const save = async () => {
    ck = await writeCheckpoint(
      cfg.out,
      { step, config: cfg, restarts },
      async (dir) => {
        // the run's last checkpoint also carries the full model in HF format (policy/model) for evaluation
        await sc.train.save({ dir, hf: step >= cfg.steps });
      },
      cfg.checkpoint.keep,
    );
    savedStep = step;
  };
  try {
    for (const p of removeStaleTemps(cfg.out))
      log(`pairuni train: removed ${p} (left by an interrupted write)`, 'info');
    try {
      runLog = new RunLog(cfg.out, cfg.log.tensorboard);
    } catch (e) {
      throw new RunStateError(`cannot create the run directory ${cfg.out}: ${(e as Error).message}`, { cause: e });
    }
    writeJsonAtomic(join(cfg.out, 'config.json'), cfg);
    runLog.startAt(step);
    // eval.jsonl says which evaluations are done: a resume neither repeats one nor skips one
    const evaluate = async () => {
      if (mode.kind !== 'pairgrpo' || !evalDue(cfg, step) || readEvals(cfg.out).some((r) => r.step === step)) return;
      const ev = await evaluatePolicy(sc, cfg, held, step, mode.sides, {
        callbacks: opts.rewards,
        signal: opts.signal,
      });
      runLog!.evaluation(step, ev.scalars);
      await sinks.log(step, ev.scalars);
      await sinks.table(step, 'eval/samples', ev.rows);
    };
    await sinks.start({ out: cfg.out, step, resumed: Boolean(opts.resume), config: cfg });
    while (step < cfg.steps) {
      if (opts.signal?.aborted) {
        if (savedStep !== step) await save();
        throw new AbortedError(
          `training stopped at step ${step}/${cfg.steps}; checkpoint ${ck?.dir ?? '(none: no step completed)'}`,
        );
      }
      try {
        await evaluate();
        const sampleEvery = cfg.log.sampleEvery;
        const samplePath =
          sampleEvery > 0 && (step + 1) % sampleEvery === 0
            ? join(cfg.out, 'samples', `step-${String(step + 1).padStart(6, '0')}.png`)
            : undefined;
        const m =
          mode.kind === 'sft'
            ? await sftStep(sc, cfg, pairs, step)
            : await pairGrpoStep(sc, cfg, pairs, step, {
                undReward: opts.undReward,
                rewards: opts.rewards,
                signal: opts.signal,
                samplePath,
                sides: mode.sides,
              });
        step += 1;
        last = m;
        runLog.write(m);
        const { step: _s, ...scalars } = m;
        await sinks.log(step, scalars as Record<string, number>);
        if (samplePath && mode.kind === 'pairgrpo') {
          runLog.image(step, 'samples/gen', samplePath);
          await sinks.image(step, 'samples/gen', samplePath);
        }
        await opts.onStep?.(m, { sidecar: sc, config: cfg });
        if (cfg.checkpoint.every > 0 && step % cfg.checkpoint.every === 0) await save();
      } catch (e) {
        if (!isRankLost(e)) throw e;
        restarts += 1;
        if (restarts > cfg.sidecar.maxRestarts) {
          throw SidecarError.generate(
            'rank_lost',
            `sidecar died ${restarts} times (limit ${cfg.sidecar.maxRestarts}): ${(e as Error).message}`,
            false,
            {},
            { cause: e },
          );
        }
        log(
          `pairuni train: sidecar lost (${(e as Error).message}); restart ${restarts}/${cfg.sidecar.maxRestarts} from ${ck?.dir ?? 'the initial model'}`,
        );
        ck = latestCheckpoint(cfg.out, skipped);
        let rejoined = false;
        if (sc.world > 1) {
          // torchrun restarts the whole world (--max-restarts): wait for it, then reload the checkpoint
          try {
            await sc.rejoin(epoch);
            epoch = sc.epoch;
            mode = await loadPolicy(sc, cfg, ck);
            rejoined = true;
            log(
              `pairuni train: the world of ${sc.world} ranks is back; resuming from step ${ck?.state.step ?? 0}`,
              'info',
            );
          } catch (re) {
            log(`pairuni train: the ranks did not come back (${(re as Error).message}); starting new ones`);
          }
        }
        if (!rejoined) {
          await sc.close().catch(() => undefined);
          ({ sc, mode } = await startPolicy(cfg, opts, ck));
          epoch = sc.epoch;
        }
        step = ck?.state.step ?? 0;
        savedStep = step;
        runLog.startAt(step);
        await sinks.start({ out: cfg.out, step, resumed: true, config: cfg });
      }
    }
    await evaluate();
    if (savedStep !== step || !ck) await save();
    return { steps: step, checkpoint: ck?.dir, last, restarts };
  } catch (e) {
    // Keep what was computed: a failure after completed-but-unsaved steps still leaves a checkpoint.
    // A bad reward stops before the step's update: the policy is still the one at this step's boundary,
    // so it is saved even when no step completed yet, and `resume` retries the step.
    if (!(e instanceof AbortedError) && (savedStep !== step || (e instanceof RewardError && !ck)) && sc.alive) {
      await save().catch((se) =>
        log(`pairuni train: could not save after the error: ${(se as Error).message}`, 'error'),
      );
    }
    throw e;
  } finally {
    runLog?.close();
    await sinks
      .close()
      .catch((se) => log(`pairuni train: an experiment sink failed to close: ${(se as Error).message}`));
    await sc.close().catch(() => undefined);
  }
}
