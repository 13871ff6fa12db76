/**
 * The PairUG dataset and its ablation sets (paper Table 5 and Fig. 8), as lists of pairs.
 * B = |D_aligned| + |D_ret| of the PairUG run is the common budget ("identical data source and
 * budget"); a set with fewer eligible items is smaller, never padded. Every sampler is seeded.
 *
 *  none           PairUG: D_aligned ∪ D_ret (Algorithm 1).
 *  aligned-only   D_aligned only (medoid self-pairs, w = 1).
 *  retrieval-only D_ret only (w = √s).
 *  random         min(B, |U|, |G|) cross pairs (u, g): a uniformly random permutation of U zipped
 *                 with one of G, so each item is used at most once; s = their cosine.
 *  u-only         min(B, #U with a caption) self-pairs drawn at random from U: both sides come from
 *                 the understanding set (the generation side is the item's completed caption).
 *  g-only         min(B, #G with question/choices/answer) self-pairs drawn at random from G.
 *  unpaired       the exact items of PairUG, but each U side is matched with the G side of another
 *                 pair (a random cyclic permutation, so no pair keeps its partner): same data,
 *                 no correspondence.
 *  low-sim        retrieval reversed: over the same remaining sets, each G item (dataset order) takes
 *                 its least similar free U item among its n least similar, no threshold, each U item
 *                 used once, capped at B pairs.
 *
 * Pair weights (w, written as w_p): aligned 1, retrieved and low-sim √max(s, 0) (eq. 3). The `random`
 * and `unpaired` pairs get w = 1 under `ablationWeight: 'paper'` (default): §3.2 ("Disentangling Data
 * Pairing from Data Quality", Table 5) treats them as naive mixtures under the same data and budget,
 * and eq. 3 defines the similarity weight only for retrieved pairs, so they train unweighted rather
 * than with a smaller effective step (√s of unrelated images is ~0.5–0.7). The paper does not print
 * their w_p; 'sqrt-similarity' gives them √max(s, 0) instead.
 * `subset` (Table 5's "PairUG (7.5K)") then keeps a seeded uniform sample of the set, in set order.
 */
import type { PairingBackend } from './backend/types.js';
import type { Ablation } from './config.js';
import { pairWeight } from '../grpo/advantages.js';
import { dot64 } from './matrix.js';
import type { PairingResult, Side } from './pair.js';
import { Rng } from '../util/prng.js';
import { retrieve } from './retrieve.js';

export interface SideRef {
  side: Side;
  /** Index within that side's manifest. */
  index: number;
}

export interface OutPair {
  type: 'aligned' | 'retrieved';
  /** Provides the understanding sample (image, question, choices, answer). */
  u: SideRef;
  /** Provides the generation sample (prompt, reference image). */
  g: SideRef;
  /** Pair similarity: 1 for a self-pair, else the f64 cosine of the two images. */
  s: number;
  /** Cluster of an aligned medoid (−1 otherwise). */
  cluster: number;
  /** The pair weight w_p the trainer applies in `pairgrpo` mode. */
  w: number;
}

export interface AblationContext {
  backend: PairingBackend;
  alignable?: (side: Side, index: number) => string | null;
  signal?: AbortSignal;
}

/** The pairs of set `kind` (PairUG itself for `none`, else an ablation, see above), each with its pair weight. */
export async function pairSet(kind: Ablation, res: PairingResult, ctx: AblationContext): Promise<OutPair[]> {
  const set = await ablationSet(kind, res, ctx);
  const unweighted = res.config.ablationWeight === 'paper' && (kind === 'random' || kind === 'unpaired');
  const weighted = set.map((p) => ({ ...p, w: unweighted ? 1 : pairWeight('pairgrpo', p.type, p.s) }));
  const size = res.config.subset;
  if (size === null || size >= weighted.length) return weighted;
  const keep = new Rng(res.config.seed * 7919 + 211).sampleWithoutReplacement(weighted.length, size).sort();
  return Array.from(keep, (i) => weighted[i]);
}

type Unweighted = Omit<OutPair, 'w'>;

async function ablationSet(kind: Ablation, res: PairingResult, ctx: AblationContext): Promise<Unweighted[]> {
  const aligned: Unweighted[] = res.aligned.map((a) => ({
    type: 'aligned',
    u: { side: a.side, index: a.index },
    g: { side: a.side, index: a.index },
    s: 1,
    cluster: a.cluster,
  }));
  const retrieved: Unweighted[] = res.retrieved.map((p) => ({
    type: 'retrieved',
    u: { side: 'U', index: p.u },
    g: { side: 'G', index: p.g },
    s: p.s,
    cluster: -1,
  }));
  const budget = aligned.length + retrieved.length;
  // An independent stream per ablation, derived from the run's seed.
  const rng = new Rng(res.config.seed * 7919 + Object.keys(ABLATION_SALT).indexOf(kind) + 1);
  const cos = (u: SideRef, g: SideRef): number => dot64(res.features, row(res, u), res.features, row(res, g));

  switch (kind) {
    case 'none':
      return [...aligned, ...retrieved];
    case 'aligned-only':
      return aligned;
    case 'retrieval-only':
      return retrieved;
    case 'random': {
      const m = Math.min(budget, res.nU, res.nG);
      const us = rng.sampleWithoutReplacement(res.nU, m);
      const gs = rng.sampleWithoutReplacement(res.nG, m);
      return Array.from(us, (u, i) => {
        const p: Unweighted = {
          type: 'retrieved',
          u: { side: 'U', index: u },
          g: { side: 'G', index: gs[i] },
          s: 0,
          cluster: -1,
        };
        p.s = cos(p.u, p.g);
        return p;
      });
    }
    case 'u-only':
    case 'g-only': {
      const side: Side = kind === 'u-only' ? 'U' : 'G';
      const n = side === 'U' ? res.nU : res.nG;
      const ok: number[] = [];
      for (let i = 0; i < n; i++) if ((ctx.alignable?.(side, i) ?? null) === null) ok.push(i);
      const pick = rng.sampleWithoutReplacement(ok.length, Math.min(budget, ok.length));
      return Array.from(pick, (j) => ({
        type: 'aligned' as const,
        u: { side, index: ok[j] },
        g: { side, index: ok[j] },
        s: 1,
        cluster: -1,
      }));
    }
    case 'unpaired': {
      const all = [...aligned, ...retrieved];
      const perm = Int32Array.from({ length: all.length }, (_, i) => i);
      // Sattolo's algorithm: a uniformly random single cycle, hence no fixed points.
      for (let i = perm.length - 1; i > 0; i--) {
        const j = rng.int(i);
        [perm[i], perm[j]] = [perm[j], perm[i]];
      }
      return all.map((p, i) => {
        const q: Unweighted = { type: 'retrieved', u: p.u, g: all[perm[i]].g, s: 0, cluster: -1 };
        q.s = cos(q.u, q.g);
        return q;
      });
    }
    case 'low-sim': {
      const inAligned = new Set(res.aligned.map((a) => row(res, a)));
      const uRem = Int32Array.from({ length: res.nU }, (_, i) => i).filter((i) => !inAligned.has(i));
      const gRem = Int32Array.from({ length: res.nG }, (_, j) => res.nU + j).filter((i) => !inAligned.has(i));
      const fh = await ctx.backend.upload(res.features);
      try {
        const r = await retrieve(ctx.backend, res.features, fh, uRem, gRem, {
          retrieval: res.config.retrieval,
          topN: res.config.topN,
          order: 'dataset',
          pairsPerG: 1,
          extra: res.config.extraCandidates,
          negate: true,
          signal: ctx.signal,
        });
        return r.pairs.slice(0, budget).map((p) => ({
          type: 'retrieved' as const,
          u: { side: 'U' as const, index: p.u },
          g: { side: 'G' as const, index: p.g - res.nU },
          s: p.s,
          cluster: -1,
        }));
      } finally {
        await ctx.backend.free(fh);
      }
    }
  }
}

const ABLATION_SALT: Record<Ablation, true> = {
  none: true,
  'aligned-only': true,
  'retrieval-only': true,
  random: true,
  'u-only': true,
  'g-only': true,
  unpaired: true,
  'low-sim': true,
};

function row(res: PairingResult, r: SideRef): number {
  return r.side === 'U' ? r.index : res.nU + r.index;
}
