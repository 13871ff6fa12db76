/**
 * Seeded pseudo-random numbers, shared by the pairing pipeline and the training data sampler.
 *
 * Determinism is promised per (seed, backend): every random choice in k-means++, the mini-batch
 * sampler, the reassignment step and the ablation samplers draws from one of these generators, so a
 * rerun with the same seed and inputs reproduces the same pairs. We do not try to reproduce
 * numpy's MT19937 streams (see docs/pairing.md §3.4): the trajectory of a k-means run is an
 * implementation detail, its quality is what we test.
 *
 * Generator: xoshiro128** (Blackman & Vigna), 128-bit state, seeded through splitmix32 so that
 * nearby seeds give unrelated streams.
 */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new RangeError(`seed must be a finite number, got ${seed}`);
    // Fold the (possibly > 32-bit) integer seed into 32 bits, then expand with splitmix32.
    let x = (Math.trunc(seed) ^ Math.trunc(seed / 2 ** 32)) >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the all-zero state is a fixed point
  }

  /** A uniform 32-bit unsigned integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** A uniform double in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** A uniform integer in [0, n), without modulo bias (rejection sampling). n ≤ 2^32. */
  int(n: number): number {
    if (!(n >= 1 && n <= 2 ** 32) || !Number.isInteger(n))
      throw new RangeError(`int(n) needs an integer 1 ≤ n ≤ 2^32, got ${n}`);
    if (n === 1) return 0;
    // Accept only draws below the largest multiple of n that fits in 32 bits.
    const limit = 2 ** 32 - (2 ** 32 % n);
    for (;;) {
      const r = this.nextU32();
      if (r < limit) return r % n;
    }
  }

  /** Fisher–Yates shuffle of `a` in place; returns `a`. */
  shuffle<T extends { length: number; [i: number]: any }>(a: T): T {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = a[i];
      a[i] = a[j];
      a[j] = t;
    }
    return a;
  }

  /** `k` distinct integers from [0, n), in the order drawn (partial Fisher–Yates over a sparse map). */
  sampleWithoutReplacement(n: number, k: number): Int32Array {
    if (k > n) throw new RangeError(`cannot draw ${k} distinct values from ${n}`);
    const out = new Int32Array(k);
    const swapped = new Map<number, number>();
    for (let i = 0; i < k; i++) {
      const j = i + this.int(n - i);
      const vj = swapped.get(j) ?? j;
      const vi = swapped.get(i) ?? i;
      out[i] = vj;
      swapped.set(j, vi);
    }
    return out;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
