/**
 * Bagel SFT on a PairUG file (PairUni App. E: understanding and generation samples 1:1, one pair per
 * packed sequence, CE + flow-matching MSE), small enough for CI (a tiny random-init Bagel on the CPU):
 *
 *   npx tsx examples/sft-bagel.ts [outDir]
 *
 * The trainer sees that the Bagel adapter scores no rollouts (no `logprobs_*`: `options.objective` is
 * `sft`, the default; `pairgrpo` would train it by PairGRPO) and runs supervised steps; the same
 * config, CLI, checkpoints, Ctrl-C and `resume` as PairGRPO. For a real run point `model.path` at a
 * BAGEL-7B-MoT directory (llm_config.json, vit_config.json, ae.safetensors, ema.safetensors, tokenizer)
 * and drop the small image sizes (defaults: 512 px generation, 378 px understanding).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sidecar, parseTrainConfig, readMetrics, train, type StepMetrics } from 'pairuni';
import { buildTinyBagel, writeTinyPairUG } from 'pairuni/testing';

const out = process.argv[2] ?? mkdtempSync(join(tmpdir(), 'pairuni-example-'));
const t0 = Date.now();

const data = writeTinyPairUG(join(out, 'data'), 8);
const sc = await Sidecar.spawn({ threads: 1 });
const model = await buildTinyBagel(sc, join(out, 'tiny-bagel'));
await sc.close();

const config = parseTrainConfig({
  data,
  out: join(out, 'run'),
  model: {
    adapter: 'bagel',
    path: model,
    device: 'cpu',
    trainModules: ['language_model', 'vit'], // Bagel's freeze_und: ['gen_expert']; freeze_vit: leave out 'vit'
    options: { vae_image_size: 32, vit_image_size: 28, ema_decay: 0.99 },
  },
  steps: 4,
  batchPairs: 2,
  // Bagel's fine-tuning recipe (lr 2e-5 for the real model; larger here so the tiny one moves).
  optim: { lr: 1e-3, betas: [0.9, 0.95], eps: 1e-15, weightDecay: 0, maxGradNorm: 1 },
  checkpoint: { every: 2 },
  sidecar: { threads: 1 },
});

const onStep = (m: StepMetrics) =>
  console.log(
    `step ${m.step}: ce=${m.ce?.toFixed(3)} mse=${m.mse?.toFixed(3)} loss=${m.loss.toFixed(3)} |grad|=${m.grad_norm.toFixed(3)} ${m['time/step'].toFixed(2)}s`,
  );

const first = await train(config, { onStep, onLog: () => undefined });
console.log(`trained ${first.steps} steps; checkpoint ${first.checkpoint}`);
const resumed = await train({ ...config, steps: 6 }, { resume: true, onStep, onLog: () => undefined });
console.log(
  `resumed to ${resumed.steps} steps; ${readMetrics(config.out).length} metric rows (${((Date.now() - t0) / 1000).toFixed(1)}s)`,
);
