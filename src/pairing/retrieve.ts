/**
 * Algorithm 1 lines 9–14: retrieval-based pairs, in one of two readings (`retrieval` in the config):
 *
 * 'literal' (default, literal.ts): each G item queries the U items still free when its turn comes.
 *
 * 'static': for every remaining G item we compute (once, exactly) its top-n U items of the
 * *initial* remaining set with f64 similarity ≥ δ, then match greedily so that each U item is used once:
 *  - order 'dataset' (paper): G items in input order; each takes its best still-free candidates;
 *  - order 'global-desc': all (g, u, s) candidates sorted by s desc (then g, then u position asc),
 *    an edge is taken when both ends still have room.
 * A G item whose n candidates were all taken stays unpaired, even if a lower-ranked free U item
 * ≥ δ exists: n bounds the search, as in the paper's top-n.
 */
import type { MatrixHandle, PairingBackend } from './backend/types.js';
import { exactSearch, type ExactLists } from './exact.js';
import { literalMatch } from './literal.js';
import type { Matrix } from './matrix.js';

export interface RetrievedPair {
  /** Global row ids in F (U rows first, then G rows). */
  g: number;
  u: number;
  s: number;
}

export interface RetrieveOptions {
  retrieval: 'literal' | 'static';
  topN: number;
  /** δ on the f64 score; undefined keeps every candidate (the low-similarity ablation). */
  threshold?: number;
  order: 'dataset' | 'global-desc';
  pairsPerG: number;
  extra: number;
  /** Rank by least similarity instead (the low-similarity ablation, see ablations.ts). */
  negate?: boolean;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface RetrieveResult {
  pairs: RetrievedPair[];
  /** The static top-n lists ('static' only). */
  lists?: ExactLists;
  /** G items with at least one candidate ≥ δ. */
  withCandidates: number;
  /** G items that had candidates but found all of them taken. */
  allTaken: number;
  requeried: number;
  /** Exhausted lists recomputed over the still-free U items ('literal' only). */
  refills: number;
}

export async function retrieve(
  backend: PairingBackend,
  X: Matrix,
  xh: MatrixHandle,
  uRem: Int32Array,
  gRem: Int32Array,
  opts: RetrieveOptions,
): Promise<RetrieveResult> {
  if (opts.retrieval === 'literal') {
    return literalMatch(backend, X, xh, uRem, gRem, {
      listLength: opts.topN,
      threshold: opts.threshold,
      order: opts.order,
      pairsPerG: opts.pairsPerG,
      extra: opts.extra,
      negate: opts.negate,
      signal: opts.signal,
      onProgress: opts.onProgress,
    });
  }
  const lists =
    uRem.length === 0
      ? {
          n: opts.topN,
          idx: new Int32Array(0),
          score: new Float64Array(0),
          len: new Int32Array(gRem.length),
          requeried: 0,
        }
      : await exactSearch(
          backend,
          { m: X, h: xh, rows: gRem },
          { m: X, h: xh, rows: uRem },
          {
            n: Math.min(opts.topN, uRem.length),
            threshold: opts.threshold,
            extra: opts.extra,
            negate: opts.negate,
            signal: opts.signal,
            onProgress: opts.onProgress,
          },
        );
  const { pairs, withCandidates, allTaken } = greedyMatch(
    lists,
    gRem,
    opts.order,
    opts.pairsPerG,
    opts.negate ? -1 : 1,
  );
  return { pairs, lists, withCandidates, allTaken, requeried: lists.requeried, refills: 0 };
}

/**
 * Greedy one-to-one matching over precomputed candidate lists (pure logic, tested on its own).
 * `sign` converts list scores back to similarities (−1 for negated lists).
 */
export function greedyMatch(
  lists: ExactLists,
  gRem: Int32Array,
  order: 'dataset' | 'global-desc',
  pairsPerG: number,
  sign = 1,
): { pairs: RetrievedPair[]; withCandidates: number; allTaken: number } {
  const n = lists.n;
  const used = new Set<number>();
  const taken = new Int32Array(gRem.length);
  const pairs: RetrievedPair[] = [];
  let withCandidates = 0;
  for (let qi = 0; qi < gRem.length; qi++) if (lists.len[qi] > 0) withCandidates++;

  if (order === 'dataset') {
    for (let qi = 0; qi < gRem.length; qi++) {
      for (let t = 0; t < lists.len[qi] && taken[qi] < pairsPerG; t++) {
        const u = lists.idx[qi * n + t];
        if (used.has(u)) continue;
        used.add(u);
        taken[qi]++;
        pairs.push({ g: gRem[qi], u, s: sign * lists.score[qi * n + t] });
      }
    }
  } else {
    const edges: { qi: number; t: number }[] = [];
    for (let qi = 0; qi < gRem.length; qi++) for (let t = 0; t < lists.len[qi]; t++) edges.push({ qi, t });
    // Lists are sorted per query, so within one g the rank t orders u positions for equal scores.
    edges.sort((a, b) => lists.score[b.qi * n + b.t] - lists.score[a.qi * n + a.t] || a.qi - b.qi || a.t - b.t);
    for (const { qi, t } of edges) {
      const u = lists.idx[qi * n + t];
      if (taken[qi] >= pairsPerG || used.has(u)) continue;
      used.add(u);
      taken[qi]++;
      pairs.push({ g: gRem[qi], u, s: sign * lists.score[qi * n + t] });
    }
  }
  let allTaken = 0;
  for (let qi = 0; qi < gRem.length; qi++) if (lists.len[qi] > 0 && taken[qi] === 0) allTaken++;
  return { pairs, withCandidates, allTaken };
}
