// complete → pair → train, on a small ShapesWorld and a tiny random-init Janus (CPU, no downloads).
import { join } from 'node:path';
import { Completer, Sidecar, buildPairUG, parseTrainConfig, readCompletionManifest, train, writeCompletionOutputs } from 'pairuni';

const out = process.argv[2] ?? 'runs/quickstart';
const sc = await Sidecar.spawn({ threads: 1 });
const world = join(out, 'world');
await sc.shapesworld.build({ out: world, seed: 0, sizes: { u_train: 32, g_train: 32, u_eval: 8, g_eval: 8 } });
const model = (await sc.models.tiny({ family: 'janus', dir: join(out, 'tiny-janus') })).args.dir;
await sc.close();

// 1. Complete: U → caption, G → question/choices/answer (ShapesWorld's come from ground truth).
let files = { u: join(world, 'u_train.jsonl'), g: join(world, 'g_train.jsonl') };
if (process.env.OPENAI_BASE_URL) {
  const completer = new Completer({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY ?? 'none', models: { u2c: 'gpt-4o', g2qa: 'gpt-4o' } });
  const job = completer.run([...(await readCompletionManifest(files.u, 'u2c')), ...(await readCompletionManifest(files.g, 'g2qa'))]);
  const results = [];
  for await (const r of job) results.push(r);
  files = await writeCompletionOutputs(join(out, 'completed'), results, job.report(), ['u2c', 'g2qa']);
}
// 2. Pair (Algorithm 1): k-means medoids + similarity retrieval over image features.
const pairs = await buildPairUG({ understanding: files.u, generation: files.g, out: join(out, 'pairug'), backbone: { kind: 'pixels', size: 16 }, config: { kmeans: { k: 8 } } });
console.log(pairs.summary);

// 3. Train: PairGRPO on the pairs, ShapesWorld's programmatic reward on the generation side.
const config = parseTrainConfig({ data: pairs.files.jsonl, out: join(out, 'run'), model: { path: model, device: 'cpu' }, steps: 2, batchPairs: 2,
  und: { k: 2, maxNewTokens: 8 }, gen: { k: 2, reward: { name: 'shapes' } }, sidecar: { threads: 1 } });
const run = await train(config, { onStep: (m) => console.log(`step ${m.step}: r_und ${m['und/reward']?.toFixed(3)}, r_gen ${m['gen/reward']?.toFixed(3)}`) });
console.log(`checkpoint: ${run.checkpoint}`);
