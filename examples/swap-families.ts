/**
 * One sidecar, three model families: `sc.train.load` replaces the loaded policy, so a Node script can
 * swap Janus → DiMOO → Bagel without restarting Python. Each family runs one step of what its adapter
 * declares (PairGRPO for Janus and DiMOO, supervised for Bagel) and prints that step's metrics.
 *
 *   npx tsx examples/swap-families.ts [outDir]
 *
 * Tiny random-init models on the CPU; for real ones set `model.path` to each family's checkpoint.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sidecar, loadArgs, loadPairUG, pairGrpoStep, parseTrainConfig, sftStep, trainMode } from 'pairuni';
import { buildTinyModel, writeTinyPairUG } from 'pairuni/testing';

const out = process.argv[2] ?? mkdtempSync(join(tmpdir(), 'pairuni-example-'));
const data = writeTinyPairUG(join(out, 'data'), 4);
const pairs = loadPairUG(data);
// Per-family settings a small CPU run needs (image sizes, diffusion steps); the rest are the defaults.
const families = {
  janus: { model: {}, und: {}, gen: {} },
  dimoo: { model: {}, und: { options: { steps: 2 } }, gen: { options: { steps: 8 } } },
  bagel: { model: { options: { vae_image_size: 32, vit_image_size: 28 } }, und: {}, gen: {} },
};

const sc = await Sidecar.spawn({ threads: 1 });
try {
  for (const [family, s] of Object.entries(families)) {
    const path = await buildTinyModel(sc, family, join(out, `tiny-${family}`));
    const cfg = parseTrainConfig({
      data,
      out: join(out, 'run', family),
      model: { adapter: family, path, device: 'cpu', ...s.model },
      batchPairs: 2,
      und: { k: 2, maxNewTokens: 4, ...s.und },
      gen: { k: 2, reward: { name: 'brightness' }, ...s.gen },
    });
    const loaded = await sc.train.load(loadArgs(cfg)); // replaces the previous family's policy
    const mode = trainMode(loaded.args.capabilities);
    if (mode.kind === 'pairgrpo' && mode.sides.gen) await sc.train.prepareReward({ reward: { name: 'brightness' } });
    const m =
      mode.kind === 'sft'
        ? await sftStep(sc, cfg, pairs, 0)
        : await pairGrpoStep(sc, cfg, pairs, 0, { sides: mode.sides });
    const shown = Object.entries(m).map(([k, v]) => `${k}=${typeof v === 'number' ? +v.toPrecision(4) : v}`);
    console.log(`${family} (${loaded.args.adapter}, ${mode.kind}): ${shown.join(' ')}`);
  }
} finally {
  await sc.close();
}
