/**
 * The PairGRPO training loop (PairUni §2.2, Algorithm: pair batch → rollouts on both sides → rewards
 * → per-(pair, side) group advantages × w_p → μ clipped-surrogate updates).
 *
 * Heavy tensors never leave the sidecar: rollouts (token ids, log-probs, images) stay there under
 * handles; the controller moves texts (to score answers), rewards and advantages (B floats), and
 * metrics. Every step's randomness derives from (seed, step), so `resume` and sidecar restarts
 * continue bit for bit.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { AbortedError, ConfigError, PairuniError, SidecarError } from '../errors.js';
import { familyOptions } from '../contract/families.js';
import { GenSampling, type OpArgs, UndSampling, type UpdateMetrics, UpdateLoss } from '../contract/ops.js';
import { toWire, wireOf } from '../contract/wire.js';
import { isPaired, lossNorm, sideAdvantages, trainWeight } from '../grpo/advantages.js';
import { renderQuestion, undReward } from '../grpo/rewards.js';
import { Sidecar, Tensor } from '../sidecar/index.js';
import { writeJsonAtomic } from '../util/atomic.js';
import { assertResumable, assertUsableOut, type Checkpoint, latestCheckpoint, removeStaleTemps, RunStateError, writeCheckpoint } from './checkpoint.js';
import type { TrainConfig } from './config.js';
import { loadPairUG, stepIndices, type TrainPair } from './data.js';
import { RunLog, type StepMetrics } from './metrics.js';
import { sftStep } from './sft.js';

export interface TrainOptions {
  /** Stops at the next step boundary, saves a checkpoint, then rejects with AbortedError. */
  signal?: AbortSignal;
  /** Continue from `<out>/checkpoints/latest` (the config may change only in steps/out/log/checkpoint/sidecar). */
  resume?: boolean;
  /** Called after each step is logged. */
  onStep?: (m: StepMetrics, ctx: { sidecar: Sidecar; config: TrainConfig }) => void | Promise<void>;
  /** Sidecar stderr lines and trainer notices. */
  onLog?: (line: string) => void;
  /** Replaces the accuracy reward of the understanding side (must return a finite number). */
  undReward?: (completion: string, pair: TrainPair) => number;
  /** How to start a sidecar (default: `Sidecar.spawn` with `config.sidecar`). Called again after a crash. */
  spawn?: () => Promise<Sidecar>;
}

export interface TrainResult {
  /** Completed steps (equals config.steps when the run finished). */
  steps: number;
  checkpoint?: string;
  last?: StepMetrics;
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
    model: toWire({ ...model, options: familyOptions(model.adapter, 'load', model.options) }),
    optim: toWire(cfg.optim),
    seed: cfg.seed,
    ...(cfg.loss.beta > 0 ? { ref_model_dir: cfg.model.refPath ?? cfg.model.path } : {}),
    ...(resumeDir ? { resume_dir: resumeDir } : {}),
  };
}

/** Which PairGRPO sides run, decided from what the loaded adapter declares it can do. */
export function grpoSides(caps: readonly string[]): { und: boolean; gen: boolean } {
  const sides = {
    und: caps.includes('und_rollout') && caps.includes('logprobs_und'),
    gen: caps.includes('gen_rollout') && caps.includes('logprobs_gen'),
  };
  if (!sides.und && !sides.gen) {
    throw new ConfigError(`the adapter declares [${caps.join(', ')}]: it can roll out and score neither side, so PairGRPO cannot train it${caps.includes('sft') ? ' (it supports supervised fine-tuning: train.sft)' : ''}`);
  }
  return sides;
}

/**
 * How the loaded adapter trains, from what it declares: PairGRPO on the sides it can roll out and
 * score; supervised fine-tuning (`train.sft`, pair batches 1:1) when it rolls out neither but has `sft`.
 */
export type TrainMode = { kind: 'pairgrpo'; sides: { und: boolean; gen: boolean } } | { kind: 'sft' };

export function trainMode(caps: readonly string[]): TrainMode {
  const canRoll = (caps.includes('und_rollout') && caps.includes('logprobs_und')) || (caps.includes('gen_rollout') && caps.includes('logprobs_gen'));
  if (!canRoll && caps.includes('sft')) return { kind: 'sft' };
  return { kind: 'pairgrpo', sides: grpoSides(caps) };
}

interface Times {
  rollout: number;
  reward: number;
  update: number;
  transport: number;
}

/** Books a sidecar call's time: inside the op (its reply's `elapsed_s`) and on the wire. */
async function timed<R extends { args: { elapsed_s: number } }>(times: Times, kind: keyof Omit<Times, 'transport'>, call: Promise<R>): Promise<R> {
  const t0 = performance.now();
  const r = await call;
  const wall = (performance.now() - t0) / 1000;
  times[kind] += r.args.elapsed_s;
  times.transport += Math.max(0, wall - r.args.elapsed_s);
  return r;
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

/**
 * One PairGRPO step on the sidecar's policy. Returns the step's metrics; `step` is the 0-based index
 * of the step being run (the metrics row carries step + 1, the number of completed steps).
 */
export async function pairGrpoStep(
  sc: Sidecar,
  cfg: TrainConfig,
  pairs: readonly TrainPair[],
  step: number,
  opts: Pick<TrainOptions, 'undReward'> & { samplePath?: string; sides?: { und: boolean; gen: boolean } } = {},
): Promise<StepMetrics> {
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

  // 2. Rollouts: K_u answers per (image, question), K_g images per prompt. They stay in the sidecar.
  //    Sampling settings travel as the config declares them (src/contract/ops.ts), plus the step's seed.
  const und = sides.und
    ? await timed(times, 'rollout', sc.train.undRollout({
        n: U.k,
        items: uPairs.map((p) => ({ image_path: p.u_image_abs, text: renderQuestion(p.question, p.choices, U.instruction) })),
        sampling: { ...wireOf(UndSampling, U), options: familyOptions(cfg.model.adapter, 'und', U.options), seed: stepSeed(cfg.seed, step, 'und') },
      }))
    : undefined;
  const gen = sides.gen
    ? await timed(times, 'rollout', sc.train.genRollout({
        n: G.k,
        items: gPairs.map((p) => ({ prompt: p.prompt })),
        sampling: { ...wireOf(GenSampling, G), options: familyOptions(cfg.model.adapter, 'gen', G.options), seed: stepSeed(cfg.seed, step, 'gen') },
      }))
    : undefined;
  const handles = { und: und?.args.handle, gen: gen?.args.handle };
  const texts = und?.args.texts ?? [];
  if (texts.length !== uPairs.length * U.k || (gen?.args.size ?? 0) !== gPairs.length * G.k) {
    throw new PairuniError('rollout', `sidecar returned ${texts.length} answers / ${gen?.args.size ?? 0} images for ${uPairs.length}×${U.k} / ${gPairs.length}×${G.k}`);
  }

  let freed = false;
  try {
    // 3. Rewards: r_Und = accuracy of the parsed letter (here), r_Gen from the sidecar's reward model.
    const tr = performance.now();
    const parts = texts.map((t, i) => undReward(t, uPairs[Math.floor(i / U.k)].answer, U.formatWeight));
    const rU = opts.undReward ? texts.map((t, i) => opts.undReward!(t, uPairs[Math.floor(i / U.k)])) : parts.map((p) => p.reward);
    times.reward += (performance.now() - tr) / 1000;
    const rG = handles.gen
      ? ((await timed(times, 'reward', sc.train.reward({ handle: handles.gen, reward: G.reward }))).tensors.rewards.data as Float32Array)
      : new Float32Array(0);

    // 4. Advantages (eq. 1–4): normalise within each (pair, side) group, then scale by w_p.
    const wU = uPairs.map((p) => trainWeight(mode, p));
    const wG = gPairs.map((p) => trainWeight(mode, p));
    const norm = { std: cfg.advantage.std, eps: cfg.advantage.eps };
    const aU = sideAdvantages(rU, U.k, wU, norm, uPairs.map((p) => `pair ${p.pair_id} (understanding)`));
    const aG = sideAdvantages(rG, G.k, wG, norm, gPairs.map((p) => `pair ${p.pair_id} (generation)`));

    if (opts.samplePath && handles.gen) {
      await sc.train.grid({ handle: handles.gen, path: opts.samplePath, nrow: G.k, max_images: 4 * G.k });
    }

    // 5. μ optimizer steps of the clipped surrogate on the same rollouts (computed in the sidecar);
    //    the last one also frees the rollouts.
    const updates: UpdateMetrics[] = [];
    const adv: Record<string, Tensor> = {};
    if (handles.und) adv.adv_und = Tensor.from(aU.adv);
    if (handles.gen) adv.adv_gen = Tensor.from(aG.adv);
    for (let inner = 0; inner < cfg.loss.mu; inner++) {
      const r = await timed(times, 'update', sc.train.update(
        {
          handles,
          loss: { ...wireOf(UpdateLoss, cfg.loss), norm: lossNorm(mode) },
          est_seed: stepSeed(cfg.seed, step, inner),
          grad_cosine: cfg.log.gradCosine,
          free: inner === cfg.loss.mu - 1,
        },
        adv,
      ));
      updates.push(r.args);
    }
    freed = true;

    // 6. Metrics.
    const avgUpd = (k: keyof UpdateMetrics) => mean(updates.map((u) => u[k]).filter((x): x is number => typeof x === 'number'));
    const rolloutTokens = (und?.args.tokens ?? 0) + (gen?.args.tokens ?? 0);
    const stepTime = (performance.now() - t0) / 1000;
    const ws = [...new Set([...uPairs, ...gPairs])];
    const maxAbs = (a: ArrayLike<number>) => (a.length ? Math.max(...Array.from(a, Math.abs)) : 0);
    const m: StepMetrics = {
      step: step + 1,
      epoch,
      'und/reward': mean(rU),
      'und/reward_std': std(rU),
      'und/acc': mean(parts.map((p) => (p.correct ? 1 : 0))),
      'und/format': mean(parts.map((p) => (p.format ? 1 : 0))),
      'und/len_mean': mean(und?.args.lengths ?? []),
      'und/zero_groups': aU.zeroGroups,
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
    const live = [handles.und, handles.gen].filter((h): h is string => h !== undefined);
    if (!freed && live.length) await sc.handles.free({ handles: live }).catch(() => undefined);
  }
}

/** Starts (or restarts) a sidecar and loads the policy, resuming from `ck` when given. */
async function startPolicy(cfg: TrainConfig, opts: TrainOptions, ck: Checkpoint | undefined): Promise<{ sc: Sidecar; mode: TrainMode }> {
  const sc = opts.spawn
    ? await opts.spawn()
    : await Sidecar.spawn({ python: cfg.sidecar.python, threads: cfg.sidecar.threads, plugins: cfg.sidecar.plugins, onLog: opts.onLog });
  try {
    const loaded = await sc.train.load(loadArgs(cfg, ck?.policyDir));
    const mode = trainMode(loaded.args.capabilities);
    if (mode.kind === 'pairgrpo' && mode.sides.gen) await sc.train.prepareReward({ reward: cfg.gen.reward });
    return { sc, mode };
  } catch (e) {
    await sc.close().catch(() => undefined);
    throw e;
  }
}

const isRankLost = (e: unknown) => e instanceof SidecarError && e.code === 'rank_lost';

/**
 * Trains `cfg.steps` steps: PairGRPO, or supervised steps for an adapter that only declares `sft`
 * (`trainMode`). Checks that `cfg.out` can be a run directory before starting a
 * sidecar, and validates the data, loads the policy and the reward model before writing anything to
 * it (then first removes what interrupted writes left there: `removeStaleTemps`); checkpoints every
 * `cfg.checkpoint.every` steps, at the end, and when stopped through `opts.signal`; restarts a dead
 * sidecar from the latest checkpoint. Every failure after the sidecar started closes it.
 */
export async function train(cfg: TrainConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const log = (s: string) => (opts.onLog ? opts.onLog(s) : process.stderr.write(`${s}\n`));
  assertUsableOut(cfg.out);
  const pairs = loadPairUG(cfg.data);
  let ck = latestCheckpoint(cfg.out);
  if (opts.resume) {
    if (!ck) {
      const msg = (drop: string) => `nothing to resume: ${cfg.out} has no complete checkpoint (${drop} to start a new run there)`;
      throw new RunStateError(msg('leave out `resume`'), { cliMessage: msg('leave out --resume') });
    }
    assertResumable(ck.state.config, cfg);
  } else if (ck) {
    const msg = (resume: string, out: string) => `${cfg.out} already holds a run (checkpoint ${ck!.dir}); pass ${resume} to continue it, or choose another ${out}`;
    throw new RunStateError(msg('`resume: true`', '`out`'), { cliMessage: msg('--resume', '--out') });
  }
  let step = ck?.state.step ?? 0;
  let restarts = ck?.state.restarts ?? 0;
  let { sc, mode } = await startPolicy(cfg, opts, ck);
  // From here on every exit goes through the `finally` below, which closes the sidecar.
  let runLog: RunLog | undefined;
  let savedStep = step;
  let last: StepMetrics | undefined;
  const save = async () => {
    ck = await writeCheckpoint(cfg.out, { step, config: cfg, restarts }, async (dir) => {
      await sc.train.save({ dir });
    }, cfg.checkpoint.keep);
    savedStep = step;
  };
  try {
    for (const p of removeStaleTemps(cfg.out)) log(`pairuni train: removed ${p} (left by an interrupted write)`);
    try {
      runLog = new RunLog(cfg.out, cfg.log.tensorboard);
    } catch (e) {
      throw new RunStateError(`cannot create the run directory ${cfg.out}: ${(e as Error).message}`, { cause: e });
    }
    writeJsonAtomic(join(cfg.out, 'config.json'), cfg);
    runLog.startAt(step);
    while (step < cfg.steps) {
      if (opts.signal?.aborted) {
        if (savedStep !== step) await save();
        throw new AbortedError(`training stopped at step ${step}/${cfg.steps}; checkpoint ${ck?.dir ?? '(none: no step completed)'}`);
      }
      try {
        const sampleEvery = cfg.log.sampleEvery;
        const samplePath = sampleEvery > 0 && (step + 1) % sampleEvery === 0 ? join(cfg.out, 'samples', `step-${String(step + 1).padStart(6, '0')}.png`) : undefined;
        const m = mode.kind === 'sft'
          ? await sftStep(sc, cfg, pairs, step)
          : await pairGrpoStep(sc, cfg, pairs, step, { undReward: opts.undReward, samplePath, sides: mode.sides });
        step += 1;
        last = m;
        runLog.write(m);
        if (samplePath && mode.kind === 'pairgrpo') runLog.image(step, 'samples/gen', samplePath);
        await opts.onStep?.(m, { sidecar: sc, config: cfg });
        if (cfg.checkpoint.every > 0 && step % cfg.checkpoint.every === 0) await save();
      } catch (e) {
        if (!isRankLost(e)) throw e;
        restarts += 1;
        if (restarts > cfg.sidecar.maxRestarts) {
          throw SidecarError.generate('rank_lost', `sidecar died ${restarts} times (limit ${cfg.sidecar.maxRestarts}): ${(e as Error).message}`, false, {}, { cause: e });
        }
        log(`pairuni train: sidecar lost (${(e as Error).message}); restart ${restarts}/${cfg.sidecar.maxRestarts} from ${ck?.dir ?? 'the initial model'}`);
        await sc.close().catch(() => undefined);
        ck = latestCheckpoint(cfg.out);
        ({ sc, mode } = await startPolicy(cfg, opts, ck));
        step = ck?.state.step ?? 0;
        savedStep = step;
        runLog.startAt(step);
      }
    }
    if (savedStep !== step || !ck) await save();
    return { steps: step, checkpoint: ck?.dir, last, restarts };
  } catch (e) {
    // Keep what was computed: a failure after completed-but-unsaved steps still leaves a checkpoint.
    if (!(e instanceof AbortedError) && savedStep !== step && sc.alive) {
      await save().catch((se) => log(`pairuni train: could not save after the error: ${(se as Error).message}`));
    }
    throw e;
  } finally {
    runLog?.close();
    await sc.close().catch(() => undefined);
  }
}
