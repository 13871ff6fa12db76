/**
 * Pairing configuration (zod). Defaults follow the paper (§2.1, §3: K≈5000, top-n = 10, δ = 0.6)
 * and sklearn's MiniBatchKMeans semantics where the paper is silent (docs/pairing.md §4).
 */
import { z } from 'zod';
import { ConfigError } from '../errors.js';

export const KMeansConfig = z
  .object({
    /** Number of clusters K; the aligned set has one medoid per non-empty cluster. */
    k: z.number().int().min(1).default(5000),
    /** Mini-batch size (sklearn default 1024). */
    batchSize: z.number().int().min(1).default(1024),
    /** Upper bound on passes over the data, counted in mini-batch steps × batch / n (sklearn `max_iter`). */
    maxEpochs: z.number().positive().default(100),
    /** Stop after this many steps without improvement of the smoothed batch inertia; null disables. */
    maxNoImprovement: z.number().int().min(1).nullable().default(10),
    /** Stop when the squared centre shift of a step is ≤ tol × mean feature variance (0 disables). */
    tol: z.number().min(0).default(0),
    /** Points in the k-means++ sample; default 3·batchSize, raised to 3·K when that is smaller than K. */
    initSize: z.number().int().min(1).optional(),
    /** Centres whose count falls below this fraction of the largest are moved to random batch points. */
    reassignmentRatio: z.number().min(0).max(1).default(0.01),
    init: z.enum(['k-means++', 'random']).default('k-means++'),
    /** Full Lloyd iterations after the mini-batch phase (0 = paper default: none). */
    refineIters: z.number().int().min(0).default(0),
    /** Cluster mean-centred (and re-normalised) features instead of the raw ones; retrieval always uses raw. */
    center: z.boolean().default(false),
  })
  .strict();
export type KMeansConfig = z.infer<typeof KMeansConfig>;

/** The pair sets `pairuni pair --ablation` can build: PairUG (`none`) and the paper's comparison sets (see docs/pairing.md). */
export const ABLATIONS = [
  'none',
  'aligned-only',
  'retrieval-only',
  'random',
  'u-only',
  'g-only',
  'unpaired',
  'low-sim',
] as const;
export const Ablation = z.enum(ABLATIONS);
export type Ablation = z.infer<typeof Ablation>;

/** Configuration of pairing (zod schema): seed, k-means, retrieval threshold and pool sizes, ablation. */
export const PairingConfig = z
  .object({
    seed: z.number().int().default(0),
    kmeans: KMeansConfig.default(KMeansConfig.parse({})),
    /**
     * Algorithm 1 lines 10–14. 'literal': each G item queries the U items still free at its turn (the
     * remaining set shrinks, line 13), so it finds its best free U item ≥ δ. 'static': top-n lists over
     * the initial remaining set, computed once; a G item whose n candidates were all taken stays unpaired.
     */
    retrieval: z.enum(['literal', 'static']).default('literal'),
    /** n: retrieval candidates per generation item ('static': the whole search; 'literal': list length per query). */
    topN: z.number().int().min(1).default(10),
    /** δ: a retrieved pair needs cosine similarity ≥ threshold (applied to the f64 score). */
    threshold: z.number().min(-1).max(1).default(0.6),
    /** 'dataset': G items claim U items in input order (paper). 'global-desc': best pairs first over all lists. */
    order: z.enum(['dataset', 'global-desc']).default('dataset'),
    /** Pairs one G item may form (1 = each image used once; topN = the literal Algorithm 1 line 12 reading). */
    pairsPerG: z.number().int().min(1).default(1),
    /** Extra f32 candidates beyond n before the f64 rescore (more = fewer re-queries). */
    extraCandidates: z.number().int().min(0).default(4),
    ablation: Ablation.default('none'),
    /**
     * Lines 4–8, which item of each cluster becomes an aligned pair. 'medoid' (paper): argmax ⟨f_i, c_k⟩.
     * Table 9's "No K-means (Random)" ablation: 'random-member' draws a uniform member of each non-empty
     * cluster; 'random' draws as many items uniformly from U ∪ G, ignoring the clusters.
     */
    selection: z.enum(['medoid', 'random-member', 'random']).default('medoid'),
    /** Keep a seeded uniform subset of this many pairs of the final set (Table 5's "PairUG (7.5K)"); null keeps all. */
    subset: z.number().int().min(1).nullable().default(null),
    /**
     * w_p of the `random` and `unpaired` ablation pairs. 'paper' (default): 1, as naive mixtures trained
     * without similarity weighting (§3.2, Table 5; eq. 3 weights only D_aligned and D_ret). 'sqrt-similarity':
     * √max(s, 0) of their image cosine, as if they were retrieved pairs.
     */
    ablationWeight: z.enum(['paper', 'sqrt-similarity']).default('paper'),
  })
  .strict();
/** Parsed {@link PairingConfig}, defaults filled. */
export type PairingConfig = z.infer<typeof PairingConfig>;
/** What {@link parsePairingConfig} accepts: a {@link PairingConfig} with every defaulted field optional. */
export type PairingConfigInput = z.input<typeof PairingConfig>;

/**
 * Validates a pairing config and fills its defaults (`undefined` → all defaults).
 *
 * @throws ConfigError naming each invalid field.
 */
export function parsePairingConfig(input: unknown): PairingConfig {
  const r = PairingConfig.safeParse(input ?? {});
  if (!r.success) {
    const msg = r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid pairing config: ${msg}`);
  }
  if (r.data.pairsPerG > r.data.topN)
    throw new ConfigError(`invalid pairing config: pairsPerG (${r.data.pairsPerG}) > topN (${r.data.topN})`);
  return r.data;
}
