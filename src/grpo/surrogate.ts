/**
 * TS reference of the clipped surrogate the sidecar optimises (python_sidecar/.../policy/loss.py),
 * for cross-checking on small tensors fetched with `train.logprobs`:
 *
 *   ρ_t = exp(logp_t − old_t)
 *   L   = Σ_i c_i Σ_t mask_it · ( −min(ρ_t Ã_i, clip(ρ_t, 1−ε_low, 1+ε_high) Ã_i) + β · k3_t )
 *   k3_t = exp(ref_t − logp_t) − (ref_t − logp_t) − 1
 *
 * with c_i from `trajCoefficients` (sequence mean per side by default; `token_sum` is eq. 1–4 as printed).
 */
import type { LossConfig } from '../contract/config.js';
import type { z } from 'zod';

/** The loss settings of {@link clippedSurrogate} (defaults: `DEFAULT_SURROGATE`, the paper's). */
export interface SurrogateConfig {
  /** The ratio ρ is clipped below at 1 − ε_low (binds for negative advantages); default 0.2. */
  epsLow: number;
  /** The ratio ρ is clipped above at 1 + ε_high (binds for positive advantages); default 0.2. */
  epsHigh: number;
  /** Weight of the k3 KL estimate against the reference model; 0 (default, the paper's) needs no `ref`. */
  beta: number;
  /** How token terms are averaged into c_i: `seq_mean` (default), `token_mean` or `token_sum` (see the train config's `loss.agg`). */
  agg: z.infer<typeof LossConfig>['agg'];
  /** `side`: each side (U, G) averaged on its own (eq. 2/4, default); `batch`: over the mixed batch (eq. 1, vanilla). */
  norm: 'side' | 'batch';
}

export const DEFAULT_SURROGATE: SurrogateConfig = { epsLow: 0.2, epsHigh: 0.2, beta: 0, agg: 'seq_mean', norm: 'side' };

/** Rows of a (B, L) matrix as flat row-major arrays. */
export interface SideLogprobs {
  /** Log-probs of the sampled tokens under the policy being optimised, (B, L) row-major. */
  logp: ArrayLike<number>;
  /** Log-probs of the same tokens under the policy that sampled them, (B, L) row-major: ρ = exp(logp − old). */
  old: ArrayLike<number>;
  /** (B, L) row-major: 1 for a completion token, 0 for padding; only tokens with 1 enter the loss. */
  mask: ArrayLike<number>;
  /** Reference-model log-probs, (B, L) row-major; read only when `beta` > 0. */
  ref?: ArrayLike<number>;
  /** Ã per trajectory, (B,): already multiplied by the pair weight. */
  adv: ArrayLike<number>;
  /** L, the padded row length in tokens (B is `adv.length`). */
  length: number;
  /** Items (groups) on this side: needed by agg 'token_sum' with norm 'side'. */
  items?: number;
}

/**
 * Per-trajectory coefficients c_i for each side (same rules as the sidecar). `items` (groups on the
 * side) is needed by `token_sum` with `norm: 'side'`, where c_i = 1/items (eq. 2/4: mean over pairs).
 */
export function trajCoefficients(
  sides: readonly { mask: ArrayLike<number>; length: number; items?: number }[],
  cfg: SurrogateConfig,
): Float64Array[] {
  const lens = sides.map((s) => {
    const b = s.mask.length / s.length;
    const out = new Float64Array(b);
    for (let i = 0; i < b; i++) for (let t = 0; t < s.length; t++) out[i] += s.mask[i * s.length + t] ? 1 : 0;
    return out;
  });
  const totals = lens.map((l) => ({ n: l.length, tokens: l.reduce((a, x) => a + x, 0) }));
  const all = { n: totals.reduce((a, t) => a + t.n, 0), tokens: totals.reduce((a, t) => a + t.tokens, 0) };
  return lens.map((l, si) => {
    const { n, tokens } = cfg.norm === 'batch' ? all : totals[si];
    if (cfg.agg === 'token_sum') {
      const per = cfg.norm === 'batch' ? n : sides[si].items;
      if (per === undefined || !(per >= 1))
        throw new RangeError(`agg 'token_sum' with norm 'side' needs a positive item count per side, got ${per}`);
      return l.map(() => 1 / per);
    }
    return l.map((len) => (cfg.agg === 'seq_mean' ? (len > 0 ? 1 / (n * len) : 0) : tokens > 0 ? 1 / tokens : 0));
  });
}

/** What {@link clippedSurrogate} computed. */
export interface SurrogateResult {
  /** L_und + L_gen: the value the sidecar's loss should match on the same inputs. */
  loss: number;
  /** Tokens with mask 1, over all sides. */
  tokens: number;
  /** Of those, tokens whose term the clip bound (ρ > 1 + ε_high with Ã > 0, or ρ < 1 − ε_low with Ã < 0); clipped / tokens is the clip fraction. */
  clipped: number;
}

/** The loss over all sides (L_und + L_gen), plus the clipped-token count. */
export function clippedSurrogate(
  sides: readonly SideLogprobs[],
  cfg: SurrogateConfig = DEFAULT_SURROGATE,
): SurrogateResult {
  const coefs = trajCoefficients(sides, cfg);
  let loss = 0;
  let tokens = 0;
  let clipped = 0;
  sides.forEach((s, si) => {
    const b = s.adv.length;
    for (let i = 0; i < b; i++) {
      const a = s.adv[i];
      for (let t = 0; t < s.length; t++) {
        const j = i * s.length + t;
        if (!s.mask[j]) continue;
        const lr = s.logp[j] - s.old[j];
        const r = Math.exp(lr);
        const rc = Math.min(Math.max(r, 1 - cfg.epsLow), 1 + cfg.epsHigh);
        let term = -Math.min(r * a, rc * a);
        if (cfg.beta > 0) {
          if (!s.ref) throw new RangeError('beta > 0 needs reference log-probs');
          const d = s.ref[j] - s.logp[j];
          term += cfg.beta * (Math.exp(d) - d - 1);
        }
        loss += coefs[si][i] * term;
        tokens++;
        if ((r > 1 + cfg.epsHigh && a > 0) || (r < 1 - cfg.epsLow && a < 0)) clipped++;
      }
    }
  });
  return { loss, tokens, clipped };
}
