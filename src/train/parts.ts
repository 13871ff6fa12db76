/**
 * Data parallelism for PairGRPO: the step's batch of pairs in `parts` contiguous parts (whole pairs:
 * both sides and all K samples of a group stay in one part), part p rolled out with its own seed, and
 * part p served by rank p mod world. The samples depend on `parts`, never on the world size, so a
 * run at 2 ranks and at 1 rank (each rank doing its parts in turn) is the same run, and a checkpoint
 * resumes at another world size.
 */
import { ConfigError } from '../errors.js';
import type { UpdateMetrics } from '../contract/ops.js';

/** The parts rank `rank` rolls out, in the order it does them (`round` k: part rank + k·world). */
export function rankParts(parts: number, world: number, rank: number): number[] {
  checkParts(parts, world);
  return Array.from({ length: parts / world }, (_, k) => rank + k * world);
}

export function checkParts(parts: number, world: number, batchPairs?: number, gradCosine = false): void {
  if (gradCosine && world > 1)
    throw new ConfigError('log.gradCosine is computed on one rank only: turn it off with more than one rank');
  if (!(Number.isInteger(parts) && parts >= 1))
    throw new ConfigError(`parallel.parts must be an integer >= 1, got ${parts}`);
  if (parts % world !== 0)
    throw new ConfigError(`parallel.parts (${parts}) must be a multiple of the number of ranks (${world})`);
  if (batchPairs !== undefined && batchPairs % parts !== 0) {
    throw new ConfigError(
      `batchPairs (${batchPairs}) must be a multiple of parallel.parts (${parts}): each part holds whole pairs`,
    );
  }
}

/** Part `p` of `xs` cut into `parts` equal contiguous slices. */
export function partOf<T>(xs: readonly T[], parts: number, p: number): T[] {
  const n = xs.length / parts;
  return xs.slice(p * n, (p + 1) * n);
}

/** The rollout seed of part `p`: part 0 keeps the step's seed (one part == the single-rank run). */
export function partSeed(stepSeed: number, p: number): number {
  return p === 0 ? stepSeed : Number(((BigInt(stepSeed) * 1_000_003n + BigInt(p)) * 7919n) % 2_147_483_647n);
}

const SIDES = ['und', 'gen'] as const;

/**
 * One step's metrics from the ranks' `train.update` replies: the ranks' losses and token counts add
 * up (their coefficients are world-global), rates are token-weighted means, extremes are extremes,
 * and the gradient norm, lr and step count are the world's (equal on every rank).
 */
export function mergeUpdateMetrics(rs: readonly UpdateMetrics[]): UpdateMetrics {
  if (rs.length === 1) return rs[0];
  const sum = (k: keyof UpdateMetrics) =>
    rs.some((r) => r[k] !== undefined) ? rs.reduce((a, r) => a + ((r[k] as number | undefined) ?? 0), 0) : undefined;
  const out: Record<string, number | undefined> = {
    ...rs[0],
    loss: sum('loss'),
    update_tokens: sum('update_tokens'),
    update_s: Math.max(...rs.map((r) => r.update_s)),
    elapsed_s: Math.max(...rs.map((r) => r.elapsed_s)),
  };
  for (const s of SIDES) {
    const tok = (r: UpdateMetrics) => (r[`${s}/tokens`] as number | undefined) ?? 0;
    if (rs.every((r) => r[`${s}/tokens`] === undefined)) continue;
    const tokens = rs.reduce((a, r) => a + tok(r), 0);
    const wmean = (k: `${typeof s}/${string}`, empty: number) =>
      tokens > 0
        ? rs.reduce((a, r) => a + tok(r) * ((r[k as keyof UpdateMetrics] as number | undefined) ?? 0), 0) / tokens
        : empty;
    const withTokens = rs.filter((r) => tok(r) > 0);
    out[`${s}/loss`] = sum(`${s}/loss`);
    out[`${s}/tokens`] = tokens;
    out[`${s}/skipped`] = sum(`${s}/skipped`);
    out[`${s}/clip_frac`] = wmean(`${s}/clip_frac`, 0);
    out[`${s}/ratio_mean`] = wmean(`${s}/ratio_mean`, 1);
    out[`${s}/kl_old`] = wmean(`${s}/kl_old`, 0);
    if (rs[0][`${s}/kl_ref`] !== undefined) out[`${s}/kl_ref`] = wmean(`${s}/kl_ref`, 0);
    out[`${s}/ratio_min`] = withTokens.length ? Math.min(...withTokens.map((r) => r[`${s}/ratio_min`] as number)) : 1;
    out[`${s}/ratio_max`] = withTokens.length ? Math.max(...withTokens.map((r) => r[`${s}/ratio_max`] as number)) : 1;
  }
  for (const [k, v] of Object.entries(out)) if (v === undefined) delete out[k];
  return out as UpdateMetrics;
}
