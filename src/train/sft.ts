/**
 * The supervised step for families that declare `sft` but cannot roll out (Bagel, PairUni App. E):
 * each step takes `batchPairs` PairUG pairs and sends both sides of every pair, so understanding and
 * generation samples come 1:1 (the sidecar packs each pair into one sequence). The step's randomness
 * (conditioning dropout, timesteps, noise) derives from (seed, step), so `resume` repeats it.
 */
import { performance } from 'node:perf_hooks';
import type { OpArgs } from '../contract/ops.js';
import { renderQuestion } from '../grpo/rewards.js';
import type { Sidecar } from '../sidecar/index.js';
import type { TrainConfig } from './config.js';
import { stepIndices, type TrainPair } from './data.js';
import type { SftStepMetrics } from './metrics.js';

/** `train.sft` examples for a batch of pairs: und (image, question → answer letter), gen (prompt → image), 1:1. */
export function sftExamples(pairs: readonly TrainPair[], instruction?: string): OpArgs<'train.sft'>['examples'] {
  return pairs.flatMap((p) => [
    {
      side: 'und' as const,
      imagePath: p.u_image_abs,
      text: renderQuestion(p.question, p.choices, instruction),
      target: p.answer,
    },
    { side: 'gen' as const, imagePath: p.g_image_abs, text: p.prompt, target: '' },
  ]);
}

/** The step's seed for the sidecar (a stream apart from the PairGRPO ones). */
export function sftSeed(seed: number, step: number): number {
  return Number(((BigInt(seed) * 1_000_003n + BigInt(step)) * 4096n + 4095n) % 2_147_483_647n);
}

/** One supervised step; `step` is 0-based, the metrics row carries step + 1. */
export async function sftStep(
  sc: Sidecar,
  cfg: TrainConfig,
  pairs: readonly TrainPair[],
  step: number,
): Promise<SftStepMetrics> {
  const t0 = performance.now();
  const { indices, epoch } = stepIndices(pairs.length, cfg.batchPairs, step, cfg.seed, 0);
  const r = await sc.train.sft({
    examples: sftExamples(
      indices.map((i) => pairs[i]),
      cfg.und.instruction,
    ),
    seed: sftSeed(cfg.seed, step),
  });
  const a = r.args;
  const m: SftStepMetrics = {
    step: step + 1,
    epoch,
    loss: a.loss,
    grad_norm: a.grad_norm,
    lr: a.lr,
    'time/update': a.elapsed_s,
    'time/step': 0,
  };
  // Per-term losses as the family names them: Bagel `ce` and `mse`; Janus `und/sft_loss`, `gen/sft_loss`.
  if (a['und/sft_loss'] !== undefined) m['und/sft_loss'] = a['und/sft_loss'];
  if (a['gen/sft_loss'] !== undefined) m['gen/sft_loss'] = a['gen/sft_loss'];
  if (a['ce/sft_loss'] !== undefined) m.ce = a['ce/sft_loss'];
  if (a['mse/sft_loss'] !== undefined) m.mse = a['mse/sft_loss'];
  m['time/step'] = (performance.now() - t0) / 1000;
  return m;
}
