/**
 * `npm run bench -- dimoo_ratio [--seeds M] [--lr X] [--model DIR]`
 *
 * What the masked-diffusion log-prob estimator choice does to the variance of the PPO ratio after one
 * update: shared vs independent masks for the old and current passes, p_mask_prompt 0 / 0.15 / 0.3, and
 * guidance in the image log-prob pass or not (bench/_dimoo_ratio.py; the shipped tiny ShapesWorld DiMOO); and, with
 * each estimator driving its own update, the std of the log-ratio at inner iteration 2 over the batch.
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DEMO_MODELS } from '../src/demo/demo.js';
import { resolvePython } from '../src/sidecar/index.js';

const here = dirname(fileURLToPath(import.meta.url));

export async function main(argv: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args: argv,
    options: {
      seeds: { type: 'string', default: '16' },
      lr: { type: 'string', default: '1e-4' },
      model: { type: 'string', default: DEMO_MODELS.dimoo },
    },
  });
  const r = spawnSync(resolvePython(), [join(here, '_dimoo_ratio.py'), values.model!, values.seeds!, values.lr!], {
    encoding: 'utf8',
    env: { ...process.env, OMP_NUM_THREADS: '1', PYTHONPATH: join(here, '..', 'python_sidecar') },
  });
  if (r.status !== 0) throw new Error(`bench/_dimoo_ratio.py failed: ${r.stderr}`);
  const last = r.stdout.trim().split('\n').pop()!;
  return { seeds: Number(values.seeds), lr: Number(values.lr), ...JSON.parse(last) };
}
