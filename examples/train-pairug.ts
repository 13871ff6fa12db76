/**
 * PairGRPO on a PairUG file, end to end, small enough for CI (a tiny random-init Janus on the CPU):
 *
 *   npx tsx examples/train-pairug.ts [outDir]
 *
 * 1. writes a tiny PairUG file (coloured squares: aligned + retrieved pairs with s_p),
 * 2. builds a tiny Janus model directory through the sidecar (real save_pretrained/from_pretrained),
 * 3. trains 4 PairGRPO steps (accuracy reward on the understanding side, a weight-free brightness
 *    reward on the generation side; use `gen.reward: { name: 'hps', config: { checkpoint } }` on a GPU),
 * 4. resumes the run for 2 more steps from its checkpoint.
 *
 * For a real run, point `model.path` at a Janus-Pro HF directory and `data` at your PairUG file;
 * everything else defaults to the paper's settings (see src/train/config.ts).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sidecar, parseTrainConfig, readMetrics, train, type StepMetrics } from 'pairuni';
import { buildTinyJanus, writeTinyPairUG } from 'pairuni/testing';

const out = process.argv[2] ?? mkdtempSync(join(tmpdir(), 'pairuni-example-'));
const t0 = Date.now();

const data = writeTinyPairUG(join(out, 'data'), 8);
const sc = await Sidecar.spawn({ threads: 1 });
const model = await buildTinyJanus(sc, join(out, 'tiny-janus'));
await sc.close();

const config = parseTrainConfig({
  data,
  out: join(out, 'run'),
  model: { path: model, device: 'cpu' },
  mode: 'pairgrpo',
  steps: 4,
  batchPairs: 2,
  und: { k: 4, maxNewTokens: 16 },
  gen: { k: 4, reward: { name: 'brightness' } },
  optim: { lr: 1e-3 },
  log: { sampleEvery: 2 },
  checkpoint: { every: 2 },
  sidecar: { threads: 1 },
});

const onStep = (m: StepMetrics) =>
  console.log(
    `step ${m.step}: r_und=${m['und/reward']?.toFixed(3)} r_gen=${m['gen/reward']?.toFixed(3)} ` +
      `w_p=${m['wp/mean']?.toFixed(3)} |grad|=${m.grad_norm.toFixed(3)} ${m['time/step'].toFixed(2)}s`,
  );

const first = await train(config, { onStep, onLog: () => undefined });
console.log(`trained ${first.steps} steps; checkpoint ${first.checkpoint}`);

const resumed = await train({ ...config, steps: 6 }, { resume: true, onStep, onLog: () => undefined });
console.log(
  `resumed to ${resumed.steps} steps; ${readMetrics(config.out).length} metric rows in ${join(config.out, 'metrics.jsonl')}`,
);
console.log(
  `TensorBoard: tensorboard --logdir ${join(config.out, 'tensorboard')}   (${((Date.now() - t0) / 1000).toFixed(1)}s)`,
);
