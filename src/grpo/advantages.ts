/**
 * PairGRPO advantages, read top to bottom as PairUni §2.2.
 *
 * (1) Vanilla GRPO (eq. 1): each prompt's K rewards are normalised within their group,
 *         Â_i = (r_i − μ_group) / (σ_group + eps).
 *     Trajectories of both tasks share one batch; understanding and generation items are drawn
 *     independently (no pairing) and no pair weight applies.
 * (2) Pairwise GRPO (eq. 2): a batch is a set of UG pairs p; each side of p is its own group:
 *         Â^(u)_{p,k} from the K_u understanding rewards of p, Â^(g)_{p,k} from the K_g generation rewards of p.
 * (3) PairGRPO (eq. 3–4): every advantage from pair p is scaled by its pair weight
 *         w_p = 1 (aligned) | sqrt(s_p) (retrieved),   Ã = w_p · Â.
 *     Ablations (App. C.1, Table 7): `linear` uses w_p = s_p for retrieved pairs; `none` uses w_p = 1.
 *
 * The clipped surrogate that consumes Ã runs in the sidecar on per-token log-probs
 * (`surrogate.ts` holds a TS reference of it for cross-checks).
 */
import { PairuniError } from '../errors.js';

/**
 * How advantages are formed: `vanilla` (1), `pair` (2), `pairgrpo` (3, w_p = √s_p for retrieved pairs),
 * and the pair-weight ablations `linear` (w_p = s_p) and `none` (w_p = 1).
 */
export const PAIR_MODES = ['vanilla', 'pair', 'pairgrpo', 'linear', 'none'] as const;
/** One of {@link PAIR_MODES}. */
export type PairMode = (typeof PAIR_MODES)[number];

/** A reward or group that cannot yield an advantage (NaN reward, empty group, size mismatch). */
export class AdvantageError extends PairuniError {
  constructor(
    message: string,
    /** Context of the failure, e.g. the index of the offending reward. */
    readonly detail: Record<string, unknown> = {},
  ) {
    super('advantage', message);
  }
}

/** How eq. 1's group normalisation computes σ (defaults: `DEFAULT_NORM`). */
export interface NormOptions {
  /** σ of the group: `unbiased` (n−1, as torch.std in GRPO/T2I-R1) or `population` (n). */
  std: 'unbiased' | 'population';
  /** Added to σ before dividing (GRPO's 1e-4). */
  eps: number;
}

export const DEFAULT_NORM: NormOptions = { std: 'unbiased', eps: 1e-4 };

/** Eq. 3: the weight of pair p. `vanilla`, `pair` and `none` do not weight (w_p = 1). */
export function pairWeight(mode: PairMode, type: 'aligned' | 'retrieved', sP: number): number {
  if (type === 'aligned' || mode === 'vanilla' || mode === 'pair' || mode === 'none') return 1;
  if (!Number.isFinite(sP)) throw new AdvantageError(`pair similarity s_p must be finite, got ${sP}`);
  const s = Math.min(1, Math.max(0, sP)); // cosine similarities below 0 carry no weight
  return mode === 'pairgrpo' ? Math.sqrt(s) : s; // 'linear'
}

/**
 * The weight the trainer applies to pair p: the PairUG file's w_p as written (eq. 4, computed by
 * `pairWeight('pairgrpo', ...)` when the file was made) in `pairgrpo` mode; every other mode
 * (eq. 1/2, Table 7's `linear` and `none`) overrides it from the pair's type and s_p.
 */
export function trainWeight(mode: PairMode, p: { type: 'aligned' | 'retrieved'; s_p: number; w_p: number }): number {
  if (mode !== 'pairgrpo') return pairWeight(mode, p.type, p.s_p);
  if (!(Number.isFinite(p.w_p) && p.w_p >= 0 && p.w_p <= 1))
    throw new AdvantageError(`pair weight w_p must be in [0, 1], got ${p.w_p}`);
  return p.w_p;
}

/**
 * Eq. 1's group normalisation for one group of rewards: (r − mean) / (σ + eps).
 * A zero-variance group gives all-zero advantages (no signal); so does a single-sample group,
 * whose unbiased σ is undefined. Throws on an empty group or a non-finite reward.
 */
export function groupNormalize(rewards: ArrayLike<number>, opts: NormOptions = DEFAULT_NORM): Float64Array {
  const n = rewards.length;
  if (n === 0) throw new AdvantageError('empty group: a group needs at least one trajectory');
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(rewards[i])) {
      throw new AdvantageError(`reward ${i} of the group is ${rewards[i]}; rewards must be finite`, { index: i });
    }
  }
  const out = new Float64Array(n);
  if (n === 1 && opts.std === 'unbiased') return out;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += rewards[i];
  mean /= n;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (rewards[i] - mean) ** 2;
  const sigma = Math.sqrt(ss / (opts.std === 'unbiased' ? n - 1 : n));
  if (sigma === 0) return out;
  for (let i = 0; i < n; i++) out[i] = (rewards[i] - mean) / (sigma + opts.eps);
  return out;
}

/** The advantages of one side (U or G) of a batch, from {@link sideAdvantages}. */
export interface SideAdvantages {
  /** Ã per trajectory (item-major: rows i·K … i·K+K−1 belong to item i), float32 for the wire. */
  adv: Float32Array;
  /** Â before the pair weight, same layout, float64. */
  raw: Float64Array;
  /** Items whose group had zero variance (their advantages are 0). */
  zeroGroups: number;
}

/**
 * Eq. 2/4 for one side: rewards of `weights.length` items × `k` samples, normalised per item and
 * multiplied by that item's pair weight. `labels` name the items in error messages.
 */
export function sideAdvantages(
  rewards: ArrayLike<number>,
  k: number,
  weights: ArrayLike<number>,
  opts: NormOptions = DEFAULT_NORM,
  labels?: readonly string[],
): SideAdvantages {
  const items = weights.length;
  if (!Number.isInteger(k) || k < 1) throw new AdvantageError(`empty group: k must be an integer ≥ 1, got ${k}`);
  if (rewards.length !== items * k) {
    throw new AdvantageError(`expected ${items} groups × ${k} = ${items * k} rewards, got ${rewards.length}`);
  }
  const adv = new Float32Array(items * k);
  const raw = new Float64Array(items * k);
  let zeroGroups = 0;
  for (let g = 0; g < items; g++) {
    const w = weights[g];
    if (!Number.isFinite(w) || w < 0) throw new AdvantageError(`pair weight of ${labels?.[g] ?? `item ${g}`} is ${w}`);
    const group = Array.prototype.slice.call(rewards, g * k, (g + 1) * k) as number[];
    let a: Float64Array;
    try {
      a = groupNormalize(group, opts);
    } catch (e) {
      if (e instanceof AdvantageError) {
        const idx = (e.detail.index as number | undefined) ?? 0;
        throw new AdvantageError(`${labels?.[g] ?? `item ${g}`}: ${e.message}`, {
          item: g,
          sample: idx,
          row: g * k + idx,
        });
      }
      throw e;
    }
    if (a.every((x) => x === 0)) zeroGroups++;
    for (let j = 0; j < k; j++) {
      raw[g * k + j] = a[j];
      adv[g * k + j] = w * a[j];
    }
  }
  return { adv, raw, zeroGroups };
}

/** How the surrogate's per-trajectory terms are averaged: per side (eq. 2/4) or over the mixed batch (eq. 1). */
export function lossNorm(mode: PairMode): 'side' | 'batch' {
  return mode === 'vanilla' ? 'batch' : 'side';
}

/** Whether the mode pairs the understanding and generation items of a batch (everything but vanilla). */
export function isPaired(mode: PairMode): boolean {
  return mode !== 'vanilla';
}
