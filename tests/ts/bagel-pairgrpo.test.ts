/** Bagel trains by SFT or by PairGRPO, decided by what the loaded adapter declares (model.options.objective). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Sidecar } from '../../src/sidecar/index.js';
import { writeTinyPairUG } from '../../src/train/fixtures.js';
import { loadArgs, loadPairUG, pairGrpoStep, parseTrainConfig, trainMode } from '../../src/train/index.js';

describe('PairGRPO on a tiny Bagel', () => {
  it('objective sft trains by SFT; pairgrpo rolls out text and SDE images, scores and updates both sides', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pairuni-bagel-grpo-'));
    const sc = await Sidecar.spawn({ threads: 1 });
    try {
      const model = join(dir, 'tiny-bagel');
      await sc.models.tiny({ family: 'bagel', dir: model, seed: 0 });
      const data = writeTinyPairUG(join(dir, 'data'), 4);
      const config = (objective: string) =>
        parseTrainConfig({
          data,
          out: join(dir, `out-${objective}`),
          batchPairs: 2,
          log: { tensorboard: false },
          model: {
            adapter: 'bagel',
            path: model,
            device: 'cpu',
            trainModules: ['language_model', 'vit'],
            options: { objective, vae_image_size: 32, vit_image_size: 28 },
          },
          und: { k: 2, maxNewTokens: 2 },
          gen: { k: 2, reward: { name: 'brightness' }, options: { num_timesteps: 3 } },
        });
      const sft = await sc.train.load(loadArgs(config('sft')));
      expect(trainMode(sft.args.capabilities)).toEqual({ kind: 'sft' });
      const cfg = config('pairgrpo');
      const loaded = await sc.train.load(loadArgs(cfg));
      expect(trainMode(loaded.args.capabilities)).toEqual({ kind: 'pairgrpo', sides: { und: true, gen: true } });
      const m = await pairGrpoStep(sc, cfg, loadPairUG(data), 0);
      // the rollout's per-step (and per-token) log-probs, rescored before any update
      // (fp32: the update rescores the rollout's rows step by step as sampled, bit for bit)
      expect(m['gen/ratio_mean']).toBe(1);
      expect(m['und/ratio_mean']).toBeCloseTo(1, 6);
      expect([m['gen/clip_frac'], m['und/clip_frac']]).toEqual([0, 0]);
      expect(m['tokens/update']).toBe(2 * 2 * 2); // gen: 2 prompts x k 2 x 2 SDE steps (3 grid points)
      expect(m['gen/reward']).toBeGreaterThan(0);
      expect(m.grad_norm).toBeGreaterThan(0);
      expect((await sc.info()).handles).toBe(0);
    } finally {
      await sc.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);
});
