/**
 * Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with the "greedy" trials of sklearn's
 * implementation): each new centre is the best of 2 + ⌊ln K⌋ candidates drawn with probability
 * proportional to D(x)², "best" meaning the lowest total potential Σ min(D(x)², ‖x − cand‖²).
 *
 * It runs on a sample S of the data (init_size points), and is GEMV-bound: each of the K steps
 * scores t candidates against all of S through the backend's gemmNT.
 */
import { AbortedError } from '../errors.js';
import type { MatrixHandle, PairingBackend } from './backend/types.js';
import { sqNorms64, type Matrix } from './matrix.js';
import type { Rng } from '../util/prng.js';

export interface KMeansPPOptions {
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

/** Returns K row ids of S (possibly repeated only if S has fewer than K distinct points). */
export async function kmeansPlusPlus(
  backend: PairingBackend,
  S: Matrix,
  sh: MatrixHandle,
  K: number,
  rng: Rng,
  opts: KMeansPPOptions = {},
): Promise<Int32Array> {
  const m = S.rows;
  if (K > m) throw new RangeError(`k-means++: K=${K} > sample size ${m}`);
  const trials = 2 + Math.floor(Math.log(K));
  const norms = sqNorms64(S);
  const chosen = new Int32Array(K);
  chosen[0] = rng.int(m);

  // D(x)²: squared distance of every sample point to its closest chosen centre.
  const closest = new Float64Array(m);
  const first = await backend.gemmNT(sh, Int32Array.of(chosen[0]), sh);
  for (let i = 0; i < m; i++) closest[i] = sqDist(norms[i], norms[chosen[0]], first[i]);

  const cum = new Float64Array(m);
  const cands = new Int32Array(trials);
  const trialPot = new Float64Array(trials);
  for (let c = 1; c < K; c++) {
    if (opts.signal?.aborted) throw new AbortedError('k-means++ aborted');
    let acc = 0;
    for (let i = 0; i < m; i++) {
      acc += closest[i];
      cum[i] = acc;
    }
    for (let t = 0; t < trials; t++) cands[t] = drawProportional(cum, rng.next() * acc);
    const dots = await backend.gemmNT(sh, cands, sh);
    let best = 0;
    for (let t = 0; t < trials; t++) {
      const o = t * m;
      const nc = norms[cands[t]];
      let p = 0;
      for (let i = 0; i < m; i++) p += Math.min(closest[i], sqDist(norms[i], nc, dots[o + i]));
      trialPot[t] = p;
      if (p < trialPot[best]) best = t; // strict: the earlier trial wins ties
    }
    const o = best * m;
    const nb = norms[cands[best]];
    for (let i = 0; i < m; i++) closest[i] = Math.min(closest[i], sqDist(norms[i], nb, dots[o + i]));
    chosen[c] = cands[best];
    if ((c & 63) === 0) opts.onProgress?.(c, K);
  }
  opts.onProgress?.(K, K);
  return chosen;
}

function sqDist(na: number, nb: number, dot: number): number {
  const d = na + nb - 2 * dot;
  return d > 0 ? d : 0;
}

/** First index whose cumulative weight exceeds r (never a zero-weight point); clamps to the last. */
function drawProportional(cum: Float64Array, r: number): number {
  let lo = 0;
  let hi = cum.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cum[mid] > r) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
