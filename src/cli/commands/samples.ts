/**
 * `pairuni samples --model DIR --prompts evaluation_metadata.jsonl --out DIR`: images of a checkpoint in
 * GenEval's folder layout (src/eval/geneval.ts), to be scored by GenEval's own evaluator. Ctrl-C stops
 * after the batch being written; the same command resumes, keeping finished prompt folders.
 */
import { parseArgs } from 'node:util';
import { AbortedError } from '../../errors.js';
import { GENEVAL_SAMPLES, GENEVAL_SEED, writeGenEvalSamples } from '../../eval/geneval.js';
import { onInterrupt } from '../../util/interrupt.js';
import { Progress } from '../../util/progress.js';
import { intOpt, missingFlags, numOpt, usageError, userPath } from '../options.js';

export const summary = 'generate images for GenEval prompts in the layout its evaluator scores (resumable)';

const HELP = `usage: pairuni samples --model <dir> --prompts <evaluation_metadata.jsonl> --out <dir> [options]

  --model <dir>       model directory (a from_pretrained directory or a pairuni export)
  --prompts <file>    GenEval metadata: one JSON object per line with "prompt" and "tag"
  --out <dir>         writes <out>/<index:05d>/metadata.jsonl and samples/<k:05d>.png per prompt
  --family <name>     adapter family (default: the model card's, else config.json's model_type, else janus)
  --n-samples <n>     images per prompt (default ${GENEVAL_SAMPLES}, GenEval's)
  --seed <n>          sampling seed (default ${GENEVAL_SEED}, GenEval's)
  --cfg <w>           classifier-free guidance weight (default: the training default, gen.cfgWeight)
  --temperature <t>   sampling temperature (default 1)
  --batch <n>         prompts per rollout call (default 1; a prompt's images depend on the seed, its
                      index and the batch size)
  --device <dev>      auto (default) | cpu | cuda | cuda:N
  --threads <n>       torch threads in the sidecar
  --quiet             no progress bar
  -h, --help          this text

Prompt folders already complete in --out are kept, so the same command resumes. Score with GenEval:
  python evaluation/evaluate_images.py <out> --outfile results.jsonl --model-path <detector dir>
Exit codes: 0 done, 130 stopped by Ctrl-C (finished folders kept), 2 a bad command line, 1 any other error.`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      prompts: { type: 'string' },
      out: { type: 'string' },
      family: { type: 'string' },
      'n-samples': { type: 'string' },
      seed: { type: 'string' },
      cfg: { type: 'string' },
      temperature: { type: 'string' },
      batch: { type: 'string' },
      device: { type: 'string' },
      threads: { type: 'string' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const missing = missingFlags(values, ['model', 'prompts', 'out']);
  if (missing) return usageError('samples', missing);
  const opts = {
    model: userPath(values.model as string),
    prompts: userPath(values.prompts as string),
    out: userPath(values.out as string),
    family: values.family,
    samples: values['n-samples'] === undefined ? undefined : intOpt(values['n-samples'], '--n-samples', { min: 1 }),
    seed: values.seed === undefined ? undefined : intOpt(values.seed, '--seed', { min: 0 }),
    cfg: values.cfg === undefined ? undefined : numOpt(values.cfg, '--cfg'),
    temperature: values.temperature === undefined ? undefined : numOpt(values.temperature, '--temperature', { gt: 0 }),
    batch: values.batch === undefined ? undefined : intOpt(values.batch, '--batch', { min: 1 }),
    device: values.device,
    threads: values.threads === undefined ? undefined : intOpt(values.threads, '--threads', { min: 1 }),
  };

  const interrupt = onInterrupt({ message: 'pairuni samples: stopping after this batch' });
  // Made at the first progress report, so a refusal before any work (a bad prompts line) prints only its error.
  let bar: Progress | undefined;
  const onProgress = (done: number, total: number) => {
    bar ??= new Progress({ label: 'samples', total, unit: 'prompt', silent: values.quiet });
    bar.update(done, total);
  };
  try {
    const res = await writeGenEvalSamples({ ...opts, signal: interrupt.signal, onProgress });
    bar?.done();
    const kept = res.kept.length ? `, ${res.kept.length} already complete` : '';
    console.log(
      `pairuni samples: ${res.written.length} prompts written${kept}; ${res.samples} images of ${res.width}×${res.height} per prompt in ${res.out}`,
    );
    return 0;
  } catch (e) {
    bar?.done();
    if (e instanceof AbortedError) {
      console.error(`pairuni samples: ${e.message}`);
      return 130;
    }
    throw e;
  } finally {
    interrupt.dispose();
  }
}
