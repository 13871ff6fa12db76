/**
 * A side's rewards from its configured sources (src/contract/reward-config.ts): each source scores
 * every item of the step, its scores are checked (one finite number per item) and the weighted sum
 * is what group normalisation sees. A source that fails stops the step with a RewardError naming the
 * source, the step and the item; nothing is silently zero.
 *
 * Plug-ins score the images where they are (in the sidecar). Callbacks and servers need the images
 * here: they are fetched once per step and rollout part (`train.rollout_images`, one uint8 payload
 * that the TS side views without copying), which is the one place bulk data reaches the controller.
 */
import {
  describeSource,
  type RewardConfig,
  type RewardSource,
  type RewardSpec,
  rewardTerms,
} from '../contract/reward-config.js';
import { PairuniError, RewardError } from '../errors.js';
import { type Sidecar, Tensor } from '../sidecar/index.js';
import type { TrainPair } from './data.js';
import { remoteRewards, type RemoteRewardOptions } from './remote-reward.js';

/** What a generation reward callback receives: every image of the step's rollout (K per prompt, in order). */
export interface GenRewardBatch {
  /** Which side's batch this is (`gen`: images). */
  side: 'gen';
  /** 0-based index of the step being run. */
  step: number;
  /** The prompt of each image. */
  prompts: string[];
  /** The pair of each image (K consecutive images share one). */
  pairs: TrainPair[];
  /** uint8 (B, H, W, 3), row-major RGB: a view of the sidecar's reply buffer (`images.bytes`, `images.shape`). */
  images: Tensor;
}

/** What an understanding reward callback receives: every sampled answer of the step (K per question, in order). */
export interface UndRewardBatch {
  /** Which side's batch this is (`und`: text answers). */
  side: 'und';
  /** 0-based index of the step being run. */
  step: number;
  /** The sampled answers. */
  completions: string[];
  /** The prompt each answer was sampled for (question, lettered choices and instruction). */
  questions: string[];
  /** The pair of each answer (its `question`, `choices` and `answer` are the item's). */
  pairs: TrainPair[];
}

/** What a reward callback receives: one side's whole batch for the step. */
export type RewardBatch = GenRewardBatch | UndRewardBatch;

/** A reward computed in TypeScript: one finite number per item of the batch, in order. */
export type RewardCallback = (
  batch: RewardBatch,
) => Promise<Float32Array | readonly number[]> | Float32Array | readonly number[];

/** Where a step's items come from, for the sources that need them. */
export interface GenRewardInputs {
  side: 'gen';
  step: number;
  /** The pair of each image. */
  pairs: readonly TrainPair[];
  /** Scores the step's rollout with a sidecar plug-in (on the ranks that hold the images). */
  plugin: (spec: RewardSpec) => Promise<Float32Array>;
  /** The step's images and the prompt of each (asked for at most once). */
  images: () => Promise<{ images: Tensor; prompts: string[] }>;
}

/** Where an understanding step's items come from, for the sources that need them. */
export interface UndRewardInputs {
  side: 'und';
  step: number;
  pairs: readonly TrainPair[];
  completions: readonly string[];
  questions: readonly string[];
  /** The built-in accuracy (+ format) reward of each answer. */
  builtin: () => Float32Array;
}

/** What scoring needs besides the items: the named callbacks, the stop signal. */
export interface RewardContext extends RemoteRewardOptions {
  /** Callbacks by the name a `{ callback }` source gives. */
  callbacks?: Readonly<Record<string, RewardCallback>>;
}

/** One side's scored rewards. */
export interface SideRewards {
  /** Σ weight · source, the rewards group normalisation sees. */
  total: Float32Array;
  /** Each term's own scores, by its key (`sum` keys; a single source is under the side's name). */
  terms: Record<string, Float32Array>;
}

/** The source's scores as one float per item, or the RewardError saying which item is wrong. */
function checked(
  scores: ArrayLike<number>,
  n: number,
  name: string,
  step: number,
  what: (i: number) => string,
): Float32Array {
  if (scores.length !== n) {
    throw new RewardError(
      `reward ${name} at step ${step}: ${scores.length} scores for ${n} items`,
      name,
      step,
      'length',
    );
  }
  const out = scores instanceof Float32Array ? scores : Float32Array.from(scores);
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(out[i])) {
      throw new RewardError(
        `reward ${name} at step ${step}: item ${i} (${what(i)}) scored ${out[i]}; rewards must be finite numbers`,
        name,
        step,
        'non_finite',
        i,
      );
    }
  }
  return out;
}

/**
 * Scores one side of a step with its reward config. Sources run one after another, in the config's
 * order; each must give one finite number per item, else a RewardError names the source, step and item.
 */
export async function scoreSide(
  cfg: RewardConfig,
  inputs: GenRewardInputs | UndRewardInputs,
  ctx: RewardContext = {},
): Promise<SideRewards> {
  const { step, side } = inputs;
  const n = inputs.pairs.length;
  const terms: Record<string, Float32Array> = {};
  const total = new Float32Array(n);
  let images: Promise<{ images: Tensor; prompts: string[] }> | undefined;
  const what = (i: number) => {
    const p = inputs.pairs[i];
    return side === 'gen'
      ? `pair ${p.pair_id}, prompt ${JSON.stringify(p.prompt)}`
      : `pair ${p.pair_id}, question ${JSON.stringify(p.question)}`;
  };
  for (const { key, weight, source } of rewardTerms(cfg, `${side}/reward`)) {
    const name = `'${key}' (${describeSource(source)}, ${side === 'gen' ? 'generation' : 'understanding'})`;
    const raw = await scoreSource(source, name, inputs, ctx, () => (images ??= (inputs as GenRewardInputs).images()));
    const r = checked(raw, n, name, step, what);
    terms[key] = r;
    for (let i = 0; i < n; i++) total[i] += weight * r[i];
  }
  return { total, terms };
}

async function scoreSource(
  source: RewardSource,
  name: string,
  inputs: GenRewardInputs | UndRewardInputs,
  ctx: RewardContext,
  images: () => Promise<{ images: Tensor; prompts: string[] }>,
): Promise<ArrayLike<number>> {
  const { step } = inputs;
  if ('builtin' in source) return (inputs as UndRewardInputs).builtin();
  if ('callback' in source) {
    const fn = ctx.callbacks?.[source.callback];
    if (!fn)
      throw new RewardError(
        `reward ${name}: no callback named '${source.callback}' was given (train(config, { rewards: { ${source.callback}: fn } }))`,
        name,
        step,
        'callback',
      );
    const batch: RewardBatch =
      inputs.side === 'gen'
        ? { side: 'gen', step, pairs: [...inputs.pairs], ...(await images()) }
        : {
            side: 'und',
            step,
            pairs: [...inputs.pairs],
            completions: [...inputs.completions],
            questions: [...inputs.questions],
          };
    try {
      return await fn(batch);
    } catch (e) {
      if (e instanceof PairuniError) throw e;
      throw new RewardError(
        `reward ${name} at step ${step}: the callback threw: ${(e as Error)?.message ?? String(e)}`,
        name,
        step,
        'callback',
        undefined,
        { cause: e },
      );
    }
  }
  if ('url' in source) {
    if (inputs.side === 'gen') {
      const { images: t } = await images();
      const items = inputs.pairs.map((p) => ({ prompt: p.prompt, pair_id: p.pair_id }));
      return remoteRewards(source, name, { side: 'gen', step, items, images: t }, ctx);
    }
    const items = inputs.pairs.map((p, i) => ({
      completion: inputs.completions[i],
      question: p.question,
      choices: p.choices,
      answer: p.answer,
      pair_id: p.pair_id,
    }));
    return remoteRewards(source, name, { side: 'und', step, items }, ctx);
  }
  return (inputs as GenRewardInputs).plugin(source);
}

/** A generation rollout in parts, each under a handle on a rank (one part: the whole rollout on rank 0). */
export interface RolloutPart {
  handle: string;
  rank: number;
}

/**
 * The generation inputs of a rollout held by the sidecar: plug-ins score each part on its rank, and
 * the images come over once (`train.rollout_images`). `book` wraps each sidecar call (the trainer times them).
 */
export function sidecarGenInputs(
  sc: Sidecar,
  parts: readonly RolloutPart[],
  step: number,
  pairs: readonly TrainPair[],
  book: <R extends { args: { elapsedS: number } }>(call: Promise<R>) => Promise<R> = (c) => c,
): GenRewardInputs {
  return {
    side: 'gen',
    step,
    pairs,
    plugin: async (spec) => {
      const scored = await Promise.all(
        parts.map((x) => book(sc.train.reward({ handle: x.handle, reward: spec }, {}, { rank: x.rank }))),
      );
      return concatF32(scored.map((x) => x.tensors.rewards.data as Float32Array));
    },
    images: async () => {
      const got = await Promise.all(
        parts.map((x) => book(sc.train.rolloutImages({ handle: x.handle }, {}, { rank: x.rank }))),
      );
      return { images: concatImages(got.map((x) => x.tensors.images)), prompts: got.flatMap((x) => x.args.prompts) };
    },
  };
}

function concatF32(parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0];
  const out = new Float32Array(parts.reduce((a, x) => a + x.length, 0));
  let off = 0;
  for (const x of parts) {
    out.set(x, off);
    off += x.length;
  }
  return out;
}

/** The parts' images as one (B, H, W, 3) tensor: the reply's own buffer with one part, a copy with several. */
function concatImages(parts: Tensor[]): Tensor {
  if (parts.length === 1) return parts[0];
  const bytes = new Uint8Array(parts.reduce((a, x) => a + x.nbytes, 0));
  let off = 0;
  for (const x of parts) {
    bytes.set(x.bytes, off);
    off += x.nbytes;
  }
  return new Tensor('u8', [parts.reduce((a, x) => a + x.shape[0], 0), ...parts[0].shape.slice(1)], bytes);
}
