/** `pairuni samples`: a model's images for GenEval prompts, in the folder layout GenEval's evaluator reads. */
import { parseArgs } from 'node:util';
import { Sidecar } from '../../sidecar/index.js';
import { parseTrainConfig } from '../../train/config.js';
import { exportGenEvalSamples, readGenEvalPrompts } from '../../train/geneval.js';
import { intOpt, missingFlags, numOpt, usageError, userPath } from '../options.js';

export const summary = "generate images for GenEval prompts in the layout of GenEval's evaluator";

const HELP = `usage: pairuni samples --model DIR --prompts geneval_metadata.jsonl --out DIR [options]

For prompt i of the metadata file writes DIR/<i:05d>/metadata.jsonl (its line) and
DIR/<i:05d>/samples/<k:04d>.png; score them with GenEval's evaluate_images.py DIR. Prompts whose folder is
complete are skipped, so a rerun continues an interrupted export (images are seeded per prompt).

  --model DIR          model directory (a checkpoint's policy/model, or a pretrained one)
  --prompts FILE       GenEval metadata JSONL (one object with "prompt" per line)
  --out DIR            output folder
  --n N                images per prompt (default 4; GenEval's default)
  --adapter NAME       model family (default janus)
  --device DEV         auto, cpu, cuda, ... (default auto)
  --cfg-weight W       classifier-free guidance weight (default 5)
  --temperature T      sampling temperature (default 1)
  --seed S             seed (default 0)
  --threads N          torch threads of the sidecar
  --quiet              no progress lines`;

export async function run(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      prompts: { type: 'string' },
      out: { type: 'string' },
      n: { type: 'string', default: '4' },
      adapter: { type: 'string', default: 'janus' },
      device: { type: 'string', default: 'auto' },
      'cfg-weight': { type: 'string', default: '5' },
      temperature: { type: 'string', default: '1' },
      seed: { type: 'string', default: '0' },
      threads: { type: 'string' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    allowPositionals: false,
  });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const missing = missingFlags(v, ['model', 'prompts', 'out']);
  if (missing) return usageError('samples', missing);
  const prompts = readGenEvalPrompts(userPath(v.prompts!));
  const n = intOpt(v.n, '--n', { min: 1 });
  const out = userPath(v.out!);
  const cfg = parseTrainConfig({
    data: userPath(v.prompts!),
    out,
    model: { adapter: v.adapter, path: userPath(v.model!), device: v.device },
    gen: { cfgWeight: numOpt(v['cfg-weight'], '--cfg-weight'), temperature: numOpt(v.temperature, '--temperature', { gt: 0 }) },
    seed: intOpt(v.seed, '--seed', { min: 0 }),
  });
  const sc = await Sidecar.spawn({ threads: v.threads ? intOpt(v.threads, '--threads', { min: 1 }) : undefined });
  try {
    const r = await exportGenEvalSamples(sc, cfg, prompts, out, n, v.quiet ? undefined : (done, total) => process.stderr.write(`pairuni samples: ${done}/${total} prompts\n`));
    console.log(`${r.images} images written for ${r.prompts} prompts (${n} each) in ${out}`);
    return 0;
  } finally {
    await sc.close();
  }
}
