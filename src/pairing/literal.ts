/**
 * Algorithm 1 lines 10–14 read literally: every G item queries the *remaining* U set, which shrinks
 * as earlier G items claim U items (line 13). So a G item whose first n neighbours were taken still
 * finds its best free U item ≥ δ; with static top-n lists (retrieve.ts, `retrieval: 'static'`) it
 * would stay unpaired.
 *
 * Exact without a |G|×|U| matrix: each G item holds a short exact list (exact.ts: f64 scores,
 * ties to the lower row id, proven against the f32 error bound) over a *superset* of the U items
 * still free. Walking that list and skipping taken items yields the best free items in order, as
 * long as the list does not run out. A list that runs out is complete when it was shorter than
 * asked (nothing else in its pool reaches δ); otherwise it is refilled by a longer exact search
 * (4× the length) over the same pool, so the backend reuses the pool it already gathered and one
 * G item is refilled O(log |U|) times at most. So the answer is the brute-force one:
 *  - order 'dataset': for g in input order, take the pairsPerG best free U items with s ≥ δ;
 *  - order 'global-desc': repeatedly take the best (s desc, g position asc, u row asc) edge ≥ δ
 *    whose g has room and whose u is free (a lazy heap holds each g's best still-free edge).
 * Lists are computed for blocks of G items against the free set at the block's start (one GEMM-
 * shaped backend call per block); only exhausted lists go back to the backend one query at a time.
 */
import { AbortedError } from '../errors.js';
import type { MatrixHandle, PairingBackend } from './backend/types.js';
import { exactSearch, type ExactLists } from './exact.js';
import type { Matrix } from './matrix.js';
import type { RetrievedPair } from './retrieve.js';

export interface LiteralOptions {
  /** Length of each exact candidate list (n): sizes the blocks, never limits which U item a G item reaches. */
  listLength: number;
  threshold?: number;
  order: 'dataset' | 'global-desc';
  pairsPerG: number;
  extra: number;
  negate?: boolean;
  /** G items per block search (dataset order). */
  block?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface LiteralResult {
  pairs: RetrievedPair[];
  /** G items that had a U item ≥ δ in the pool they searched (the free set at their block's start). */
  withCandidates: number;
  /** Of those, G items left with no pair (every such U item was claimed first). */
  allTaken: number;
  requeried: number;
  /** Exhausted lists recomputed over the U items still free. */
  refills: number;
}

/** One G item's exact candidate list over `pool` (a superset of the free U items) and how far it has been read. */
interface Cursor {
  rows: Int32Array;
  score: Float64Array;
  len: number;
  /** The length asked for; the list was cut there when `full` (more candidates may exist beyond it). */
  asked: number;
  full: boolean;
  pool: Int32Array;
  pos: number;
}

export async function literalMatch(
  backend: PairingBackend,
  X: Matrix,
  xh: MatrixHandle,
  uRem: Int32Array,
  gRem: Int32Array,
  opts: LiteralOptions,
): Promise<LiteralResult> {
  const nq = gRem.length;
  const sign = opts.negate ? -1 : 1;
  // free[u] for global row ids; uRem is ascending, so filtering it keeps the tie-break order.
  const free = new Uint8Array(X.rows);
  for (const u of uRem) free[u] = 1;
  let nFree = uRem.length;
  const freeRows = (): Int32Array => uRem.filter((u) => free[u] === 1);
  const stats = { requeried: 0, refills: 0 };

  const search = async (
    qRows: Int32Array,
    pool: Int32Array,
    length = opts.listLength,
  ): Promise<{ lists: ExactLists; n: number }> => {
    const n = Math.min(length, pool.length);
    const lists = await exactSearch(
      backend,
      { m: X, h: xh, rows: qRows },
      { m: X, h: xh, rows: pool },
      {
        n,
        threshold: opts.threshold,
        extra: opts.extra,
        negate: opts.negate,
        signal: opts.signal,
      },
    );
    stats.requeried += lists.requeried;
    return { lists, n };
  };
  const cursorOf = (lists: ExactLists, n: number, pool: Int32Array, r: number): Cursor => {
    const len = lists.len[r];
    return {
      rows: lists.idx.subarray(r * lists.n, r * lists.n + len),
      score: lists.score.subarray(r * lists.n, r * lists.n + len),
      len,
      asked: n,
      full: len === n && n < pool.length,
      pool,
      pos: 0,
    };
  };
  /** Moves qi's cursor to its best free candidate (refilling when needed); false if none is left. */
  const advance = async (qi: number, cur: Cursor[]): Promise<boolean> => {
    for (;;) {
      const c = cur[qi];
      while (c.pos < c.len && free[c.rows[c.pos]] === 0) c.pos++;
      if (c.pos < c.len) return true;
      if (!c.full || nFree === 0) return false;
      if (opts.signal?.aborted) throw new AbortedError('retrieval aborted');
      const { lists, n } = await search(Int32Array.of(gRem[qi]), c.pool, c.asked * 4);
      cur[qi] = cursorOf(lists, n, c.pool, 0); // its first c.len entries are taken and get skipped
      stats.refills++;
    }
  };

  const pairs: RetrievedPair[] = [];
  const taken = new Int32Array(nq);
  const had = new Uint8Array(nq);
  const take = (qi: number, c: Cursor): void => {
    const u = c.rows[c.pos];
    free[u] = 0;
    nFree--;
    taken[qi]++;
    pairs.push({ g: gRem[qi], u, s: sign * c.score[c.pos] });
    c.pos++;
  };

  if (opts.order === 'dataset') {
    const block = opts.block ?? 1024;
    for (let b0 = 0; b0 < nq && nFree > 0; b0 += block) {
      if (opts.signal?.aborted) throw new AbortedError('retrieval aborted');
      const b1 = Math.min(nq, b0 + block);
      const pool = freeRows();
      const { lists, n } = await search(gRem.subarray(b0, b1), pool);
      const cur: Cursor[] = [];
      for (let qi = b0; qi < b1; qi++) {
        cur[qi] = cursorOf(lists, n, pool, qi - b0);
        if (cur[qi].len > 0) had[qi] = 1;
        while (taken[qi] < opts.pairsPerG && (await advance(qi, cur))) take(qi, cur[qi]);
      }
      opts.onProgress?.(b1, nq);
    }
    opts.onProgress?.(nq, nq); // also when the U items ran out before the last block
  } else {
    const pool = uRem;
    const cur: Cursor[] = [];
    if (pool.length > 0) {
      const { lists, n } = await search(gRem, pool);
      for (let qi = 0; qi < nq; qi++) {
        cur[qi] = cursorOf(lists, n, pool, qi);
        if (cur[qi].len > 0) had[qi] = 1;
      }
    }
    // Max-heap of G positions keyed by their current candidate: (s desc, g position asc, u row asc).
    const key = (qi: number): [number, number] => [cur[qi].score[cur[qi].pos], cur[qi].rows[cur[qi].pos]];
    const before = (a: number, b: number): boolean => {
      const [sa, ua] = key(a);
      const [sb, ub] = key(b);
      return sa !== sb ? sa > sb : a !== b ? a < b : ua < ub;
    };
    const heap = new MinFirstHeap(before);
    for (let qi = 0; qi < nq && pool.length > 0; qi++) if (await advance(qi, cur)) heap.push(qi);
    let done = 0;
    while (heap.size > 0) {
      const qi = heap.pop();
      const c = cur[qi];
      if (free[c.rows[c.pos]] === 1) take(qi, c);
      if (taken[qi] < opts.pairsPerG && (await advance(qi, cur))) heap.push(qi);
      if (++done % 4096 === 0) {
        if (opts.signal?.aborted) throw new AbortedError('retrieval aborted');
        opts.onProgress?.(Math.min(nq, pairs.length), nq);
      }
    }
    opts.onProgress?.(nq, nq);
  }

  let withCandidates = 0;
  let allTaken = 0;
  for (let qi = 0; qi < nq; qi++) {
    if (!had[qi]) continue;
    withCandidates++;
    if (taken[qi] === 0) allTaken++;
  }
  return { pairs, withCandidates, allTaken, ...stats };
}

/** A binary heap whose top is the element that comes `before` all others. */
class MinFirstHeap {
  private readonly a: number[] = [];
  constructor(private readonly before: (x: number, y: number) => boolean) {}

  get size(): number {
    return this.a.length;
  }

  push(x: number): void {
    const a = this.a;
    a.push(x);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }

  pop(): number {
    const a = this.a;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.before(a[l], a[m])) m = l;
        if (r < a.length && this.before(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}
