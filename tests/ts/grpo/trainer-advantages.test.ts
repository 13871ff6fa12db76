/**
 * What one PairGRPO step sends to the sidecar, captured at the boundary by a recording sidecar:
 * the advantages of a 2-pair batch against hand-computed values. Both sides of a pair carry the
 * same w_p (eq. 4); vanilla (eq. 1) draws its understanding and generation items independently and
 * weights nothing.
 */
import { describe, expect, it } from 'vitest';
import type { Sidecar, Tensor } from '../../../src/sidecar/index.js';
import { parseTrainConfig, pairGrpoStep, type TrainConfigInput, type TrainPair } from '../../../src/train/index.js';
import { stepIndices } from '../../../src/train/data.js';

const K = 3;

function pair(id: 'A' | 'B' | 'C' | 'D', type: 'aligned' | 'retrieved', s: number, w: number): TrainPair {
  return {
    pair_id: id,
    type,
    s_p: s,
    w_p: w,
    u_src: 'U',
    u_id: `u${id}`,
    g_src: 'G',
    g_id: `g${id}`,
    u_image: `u${id}.png`,
    u_image_abs: `/x/u${id}.png`,
    g_image: `g${id}.png`,
    g_image_abs: `/x/g${id}.png`,
    question: `question ${id}`,
    choices: ['yes', 'no'],
    answer: 'A',
    prompt: `prompt ${id}`,
  };
}

// Rewards per pair and sample. Understanding: pair A [1, 0, 0], B [1, 1, 0], C/D [0, 1, 1].
const undR: Record<string, number[]> = { A: [1, 0, 0], B: [1, 1, 0], C: [0, 1, 1], D: [0, 1, 1] };
// Generation: A [0.1, 0.4, 0.7], B [0.5, 0.5, 0.8], C/D [0.2, 0.2, 0.2] (zero variance: no signal).
const genR: Record<string, number[]> = {
  A: [0.1, 0.4, 0.7],
  B: [0.5, 0.5, 0.8],
  C: [0.2, 0.2, 0.2],
  D: [0.2, 0.2, 0.2],
};

// Â = (r − mean) / (unbiased std + 1e-4), worked out by hand:
//  und A: mean 1/3, deviations (2/3, −1/3, −1/3), var = (4/9 + 1/9 + 1/9)/2 = 1/3
//  und B: mean 2/3, deviations (1/3, 1/3, −2/3), var 1/3;  C/D mirror A: (−2/3, 1/3, 1/3)
//  gen A: mean 0.4, deviations (−0.3, 0, 0.3), var (0.09 + 0.09)/2 = 0.09, std 0.3
//  gen B: mean 0.6, deviations (−0.1, −0.1, 0.2), var (0.01 + 0.01 + 0.04)/2 = 0.03
const sdU = Math.sqrt(1 / 3) + 1e-4;
const sdB = Math.sqrt(0.03) + 1e-4;
const base: Record<string, { und: number[]; gen: number[] }> = {
  A: { und: [2 / 3 / sdU, -1 / 3 / sdU, -1 / 3 / sdU], gen: [-0.3 / 0.3001, 0, 0.3 / 0.3001] },
  B: { und: [1 / 3 / sdU, 1 / 3 / sdU, -2 / 3 / sdU], gen: [-0.1 / sdB, -0.1 / sdB, 0.2 / sdB] },
  C: { und: [-2 / 3 / sdU, 1 / 3 / sdU, 1 / 3 / sdU], gen: [0, 0, 0] },
  D: { und: [-2 / 3 / sdU, 1 / 3 / sdU, 1 / 3 / sdU], gen: [0, 0, 0] },
};

interface Sent {
  und: string[]; // pair id of each understanding item, in batch order
  gen: string[];
  advUnd: number[];
  advGen: number[];
  norm: string;
}

/** A sidecar double: rollouts of known items, fixed rewards, and a record of what `train.update` received. */
function recordingSidecar(sent: Sent[]): Sidecar {
  let cur: Sent;
  const idOf = (s: string) => s.match(/(?:question|prompt) ([A-D])/)![1];
  const sc = {
    train: {
      undRollout: async (a: { n: number; items: { text: string }[] }) => {
        cur = { und: a.items.map((it) => idOf(it.text)), gen: [], advUnd: [], advGen: [], norm: '' };
        const texts = cur.und.flatMap((id) => Array.from({ length: a.n }, (_, j) => `${id}#${j}`));
        return { args: { handle: 'h-und', texts, lengths: texts.map(() => 1), tokens: texts.length, elapsedS: 0 } };
      },
      genRollout: async (a: { n: number; items: { prompt: string }[] }) => {
        cur.gen = a.items.map((it) => idOf(it.prompt));
        return { args: { handle: 'h-gen', size: a.items.length * a.n, tokens: 0, elapsedS: 0 } };
      },
      reward: async () => ({
        args: { elapsedS: 0 },
        tensors: { rewards: { data: Float32Array.from(cur.gen.flatMap((id) => genR[id])) } },
      }),
      grid: async () => ({ args: {} }),
      update: async (args: { loss: { norm: string } }, adv: Record<string, Tensor>) => {
        cur.advUnd = Array.from(adv.adv_und.data as Float32Array);
        cur.advGen = Array.from(adv.adv_gen.data as Float32Array);
        cur.norm = args.loss.norm;
        sent.push(cur);
        return { args: { loss: 0, grad_norm: 0, lr: 0, update_tokens: 0, elapsed_s: 0 } };
      },
    },
    handles: { free: async () => ({ args: {} }) },
    // one rank: world-scoped ops (rollouts, update) arrive through `all`, one reply per rank
    world: 1,
    all: async (op: string, args: (r: number) => never, payloads?: (r: number) => Record<string, Tensor>) => {
      const ops: Record<string, (a: never, p: Record<string, Tensor>) => Promise<unknown>> = {
        'train.und_rollout': sc.train.undRollout,
        'train.gen_rollout': sc.train.genRollout,
        'train.update': sc.train.update,
      };
      return [await ops[op](args(0), payloads?.(0) ?? {})];
    },
  };
  return sc as unknown as Sidecar;
}

const cfg = (mode: TrainConfigInput['mode']) =>
  parseTrainConfig({
    data: 'unused.jsonl',
    out: 'unused',
    mode,
    model: { path: 'unused' },
    batchPairs: 2,
    und: { k: K },
    gen: { k: K, reward: { name: 'brightness' } },
  });
const undReward = (completion: string) => undR[completion[0]][Number(completion.split('#')[1])];

const expectAdv = (got: number[], want: number[]) => {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => expect(g).toBeCloseTo(want[i], 5));
};
/** The advantages expected for items `ids`, each side scaled by `w(id)`. */
const expected = (ids: string[], side: 'und' | 'gen', w: (id: string) => number) =>
  ids.flatMap((id) => base[id][side].map((a) => w(id) * a));

describe('advantages as they reach the sidecar (2-pair batch, K = 3)', () => {
  const pairs = [pair('A', 'aligned', 1, 1), pair('B', 'retrieved', 0.64, 0.8)];

  it('pairgrpo: both sides of each pair carry its w_p (A: 1, B: 0.8), per-side normalisation', async () => {
    const sent: Sent[] = [];
    await pairGrpoStep(recordingSidecar(sent), cfg('pairgrpo'), pairs, 0, { undReward });
    const [s] = sent;
    expect(s.gen).toEqual(s.und); // item i of both sides is the same pair
    expect([...s.und].sort()).toEqual(['A', 'B']);
    const w = (id: string) => (id === 'A' ? 1 : 0.8);
    expectAdv(s.advUnd, expected(s.und, 'und', w));
    expectAdv(s.advGen, expected(s.gen, 'gen', w));
    // spot check one value written out: B's third understanding sample, 0.8 · (−2/3) / (√(1/3) + 1e-4)
    const b = s.und.indexOf('B');
    expect(s.advUnd[b * K + 2]).toBeCloseTo((0.8 * (-2 / 3)) / (Math.sqrt(1 / 3) + 1e-4), 5);
    expect(s.norm).toBe('side');
  });

  it('linear (Table 7): the same s_p on both sides (B: 0.64); pair (eq. 2): 1 on both', async () => {
    for (const [mode, wB] of [
      ['linear', 0.64],
      ['pair', 1],
    ] as const) {
      const sent: Sent[] = [];
      await pairGrpoStep(recordingSidecar(sent), cfg(mode), pairs, 0, { undReward });
      const [s] = sent;
      expect(s.gen).toEqual(s.und);
      const w = (id: string) => (id === 'A' ? 1 : wB);
      expectAdv(s.advUnd, expected(s.und, 'und', w));
      expectAdv(s.advGen, expected(s.gen, 'gen', w));
    }
  });

  it('vanilla (eq. 1): understanding and generation items drawn by independent streams, no pair weight, one batch normalisation', async () => {
    const four = [...pairs, pair('C', 'retrieved', 0.49, 0.7), pair('D', 'retrieved', 0.81, 0.9)];
    const ids = four.map((p) => p.pair_id);
    const sent: Sent[] = [];
    const sc = recordingSidecar(sent);
    const c = cfg('vanilla');
    for (let step = 0; step < 4; step++) await pairGrpoStep(sc, c, four, step, { undReward });
    let differ = 0;
    sent.forEach((s, step) => {
      expect(s.und).toEqual(stepIndices(4, 2, step, c.seed, 0).indices.map((i) => ids[i]));
      expect(s.gen).toEqual(stepIndices(4, 2, step, c.seed, 1).indices.map((i) => ids[i]));
      if (s.und.join() !== s.gen.join()) differ++;
      expectAdv(
        s.advUnd,
        expected(s.und, 'und', () => 1),
      );
      expectAdv(
        s.advGen,
        expected(s.gen, 'gen', () => 1),
      );
      expect(s.norm).toBe('batch');
    });
    expect(differ).toBeGreaterThan(0); // the two sides are not the same pairs
  });
});
