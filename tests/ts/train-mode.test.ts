/** How `train` picks PairGRPO or SFT: from the adapter's declared capabilities, never from its name. */
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import type { Sidecar } from '../../src/sidecar/index.js';
import { parseTrainConfig, sftExamples, sftSeed, sftStep, trainMode } from '../../src/train/index.js';
import type { TrainPair } from '../../src/train/data.js';

describe('trainMode', () => {
  it('runs PairGRPO on the sides an adapter can roll out and score', () => {
    expect(trainMode(['und_rollout', 'logprobs_und', 'gen_rollout', 'logprobs_gen', 'sft'])).toEqual({
      kind: 'pairgrpo',
      sides: { und: true, gen: true },
    });
    expect(trainMode(['gen_rollout', 'logprobs_gen'])).toEqual({ kind: 'pairgrpo', sides: { und: false, gen: true } });
  });
  it('runs SFT when the adapter rolls out neither side but declares sft (Bagel)', () => {
    expect(trainMode(['sft'])).toEqual({ kind: 'sft' });
    expect(trainMode(['sft', 'und_rollout'])).toEqual({ kind: 'sft' }); // a rollout without log-probs cannot train
    // Bagel declares its log-probs only with model.options.objective 'pairgrpo' (adapters/bagel.py)
    expect(trainMode(['cfg', 'gen_rollout', 'sft', 'und_rollout'])).toEqual({ kind: 'sft' });
    expect(trainMode(['cfg', 'gen_rollout', 'logprobs_gen', 'logprobs_und', 'sft', 'und_rollout'])).toEqual({
      kind: 'pairgrpo',
      sides: { und: true, gen: true },
    });
  });
  it('refuses an adapter that can do neither', () => {
    expect(() => trainMode(['cfg'])).toThrow(ConfigError);
  });
});

describe('sftExamples', () => {
  const pair = (id: number): TrainPair =>
    ({
      pair_id: id,
      u_image_abs: `/u${id}.png`,
      g_image_abs: `/g${id}.png`,
      question: `q${id}`,
      choices: ['red', 'blue'],
      answer: 'B',
      prompt: `p${id}`,
    }) as unknown as TrainPair;
  it('sends both sides of every pair, 1:1 and in pair order', () => {
    const ex = sftExamples([pair(1), pair(2)], '{question}|{choices}');
    expect(ex.map((e) => e.side)).toEqual(['und', 'gen', 'und', 'gen']);
    expect(ex[0]).toEqual({ side: 'und', imagePath: '/u1.png', text: 'q1|A. red\nB. blue', target: 'B' });
    expect(ex[3]).toEqual({ side: 'gen', imagePath: '/g2.png', text: 'p2', target: '' });
  });
  it('seeds each step apart and reproducibly', () => {
    expect(sftSeed(7, 3)).toBe(sftSeed(7, 3));
    expect(new Set([0, 1, 2, 3].map((s) => sftSeed(7, s))).size).toBe(4);
    expect(sftSeed(7, 3)).toBeLessThan(2_147_483_647);
  });
});

describe('sftStep metrics', () => {
  const pairs = [1, 2].map(
    (id) =>
      ({
        pair_id: id,
        u_image_abs: `/u${id}.png`,
        g_image_abs: `/g${id}.png`,
        question: `q${id}`,
        choices: ['a', 'b'],
        answer: 'A',
        prompt: `p${id}`,
      }) as unknown as TrainPair,
  );
  const cfg = parseTrainConfig({ data: 'unused.jsonl', out: 'unused', model: { path: 'unused' }, batchPairs: 2 });
  /** A sidecar whose `train.sft` replies with the given per-term losses. */
  const replying = (terms: Record<string, number>) =>
    ({
      train: {
        sft: async () => ({
          args: { loss: 1.5, grad_norm: 2, lr: 1e-6, optimizer_step: 1, elapsed_s: 0.25, ...terms },
          tensors: {},
        }),
      },
    }) as unknown as Sidecar;

  it("logs Bagel's terms as `ce` and `mse`, the others' under their own names", async () => {
    const bagel = await sftStep(replying({ 'ce/sft_loss': 0.5, 'mse/sft_loss': 0.125 }), cfg, pairs, 4);
    expect(bagel).toMatchObject({
      step: 5,
      loss: 1.5,
      grad_norm: 2,
      lr: 1e-6,
      'time/update': 0.25,
      ce: 0.5,
      mse: 0.125,
    });
    expect(Object.keys(bagel).filter((k) => k.endsWith('sft_loss'))).toEqual([]);
    const janus = await sftStep(replying({ 'und/sft_loss': 0.75, 'gen/sft_loss': 3 }), cfg, pairs, 0);
    expect(janus).toMatchObject({ step: 1, 'und/sft_loss': 0.75, 'gen/sft_loss': 3 });
    expect('ce' in janus || 'mse' in janus).toBe(false);
    expect(janus['time/step']).toBeGreaterThanOrEqual(0);
  });
});
