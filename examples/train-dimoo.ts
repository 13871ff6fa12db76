/**
 * PairGRPO on a masked-diffusion unified model (Lumina-DiMOO family), small enough for CI:
 *
 *   npx tsx examples/train-dimoo.ts [outDir]
 *
 * The same trainer and advantage math as Janus; only `model.adapter` changes. The family's defaults
 * are the paper's (Appendix E): 2 diffusion steps for text answers, 35 MaskGIT steps for images, and
 * here rollout size 2 per side. Log-probs are the one-step mean-field estimate (d1 / dLLM) whose masks
 * come from the trainer's per-(step, inner iteration) estimator seed, so with μ = 2 the behaviour
 * log-probs of both inner iterations are recorded at rollout time.
 *
 * For the real model: `model.path` = a Lumina-DiMOO checkpoint (config.json + *.safetensors + vqvae/),
 * `model.options.code_dir` (or PAIRUNI_DIMOO_CODE) = your Lumina-DiMOO checkout, on a GPU.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sidecar, parseTrainConfig, train } from 'pairuni';
import { writeTinyPairUG } from 'pairuni/testing';

const out = process.argv[2] ?? mkdtempSync(join(tmpdir(), 'pairuni-example-'));
const t0 = Date.now();

const data = writeTinyPairUG(join(out, 'data'), 8);
const sc = await Sidecar.spawn({ threads: 1 });
// A tiny random-init bidirectional transformer with DiMOO's token conventions (MASK, image codes, row separators).
const model = (await sc.models.tiny({ family: 'dimoo', dir: join(out, 'tiny-dimoo'), seed: 0 })).args.dir;
await sc.close();

const config = parseTrainConfig({
  data,
  out: join(out, 'run'),
  model: { adapter: 'dimoo', path: model, device: 'cpu', options: { p_mask_prompt: 0.15 } },
  mode: 'pairgrpo',
  steps: 3,
  batchPairs: 2,
  und: { k: 2, maxNewTokens: 4, options: { steps: 2 } },
  gen: { k: 2, cfgWeight: 5, reward: { name: 'brightness' }, options: { steps: 35 } },
  loss: { mu: 2 },
  optim: { lr: 1e-3 },
  checkpoint: { every: 3 },
  sidecar: { threads: 1 },
});

const res = await train(config, {
  onLog: () => undefined,
  onStep: (m) =>
    console.log(
      `step ${m.step}: r_und=${m['und/reward']?.toFixed(3)} r_gen=${m['gen/reward']?.toFixed(3)} ` +
        `ratio und/gen=${m['und/ratio_mean']?.toFixed(4)}/${m['gen/ratio_mean']?.toFixed(4)} ${m['time/step'].toFixed(2)}s`,
    ),
});
console.log(`trained ${res.steps} steps; checkpoint ${res.checkpoint} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
