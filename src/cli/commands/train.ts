/**
 * `pairuni train --config run.json [--resume] [--steps N] [--out DIR]`: PairGRPO training (or SFT for
 * an adapter that declares only `sft`, such as Bagel) with a progress bar. Ctrl-C stops at the next step boundary and saves a checkpoint (a second Ctrl-C exits
 * at once); `--resume` continues from the run directory's latest checkpoint.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { AbortedError } from '../../errors.js';
import { loadTrainConfig } from '../../train/config.js';
import { isTrainerNotice, RunStateError, train } from '../../train/trainer.js';
import { onInterrupt } from '../../util/interrupt.js';
import { Progress } from '../../util/progress.js';
import { intOpt, USAGE_EXIT } from '../options.js';

export const summary = 'train a unified VLM with PairGRPO on a PairUG file (checkpoints, resume, TensorBoard)';

const HELP = `usage: pairuni train --config <run.json> [options]

  --config <file>   training config (JSON; paths relative to the file); its keys and defaults
                    are listed under "Config keys" in the package's docs/training.md
  --resume          continue from <out>/checkpoints/latest
  --steps <n>       override config.steps
  --out <dir>       override config.out
  --data <file>     override config.data
  --model <dir>     override config.model.path
  --ranks <n>       override config.sidecar.ranks: n ranks on this host (torchrun, FSDP2 data parallel)
  --quiet           no progress bar
  -h, --help        this text

Writes <out>/metrics.jsonl, <out>/tensorboard/, <out>/samples/, <out>/checkpoints/step-NNNNNN/.
Exit codes: 0 done, 130 stopped by Ctrl-C (checkpoint saved), 2 a bad command line, 1 any other error.`;

const fmt = (x: number | undefined, d = 3) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d));

export async function run(argv: string[]): Promise<number> {
  // Unknown flags and missing values are reported by the one handler in src/cli/index.ts.
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' },
      resume: { type: 'boolean', default: false },
      steps: { type: 'string' },
      out: { type: 'string' },
      data: { type: 'string' },
      model: { type: 'string' },
      ranks: { type: 'string' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!values.config) {
    console.error(`pairuni train: --config is required\n\n${HELP}`);
    return USAGE_EXIT;
  }
  const overrides: Record<string, unknown> = {};
  if (values.steps !== undefined) overrides.steps = intOpt(values.steps, '--steps', { min: 1 });
  // Paths given on the command line are relative to the working directory (the config's to its file).
  if (values.out) overrides.out = resolve(values.out);
  if (values.data) overrides.data = resolve(values.data);
  if (values.model) overrides.model = { path: resolve(values.model) };
  if (values.ranks !== undefined) overrides.sidecar = { ranks: intOpt(values.ranks, '--ranks', { min: 1 }) };
  const cfg = loadTrainConfig(values.config, overrides);

  const interrupt = onInterrupt({ message: 'pairuni train: stopping after this step' });
  const bar = new Progress({ label: 'train', total: cfg.steps, unit: 'step', silent: values.quiet });
  try {
    const res = await train(cfg, {
      resume: values.resume,
      signal: interrupt.signal,
      // Not the sidecar's raw stderr: Python's and torchrun's tracebacks (a corrupt checkpoint, Ctrl-C
      // with --ranks 2) printed before the typed error that says the same.
      onLog: (l) => {
        if (isTrainerNotice(l)) process.stderr.write(`${l}\n`);
      },
      onStep: (m) => {
        // SFT steps (an adapter that declares only `sft`, e.g. Bagel) report their loss terms instead of rewards.
        const what = 'ce' in m ? `ce=${fmt(m.ce)} mse=${fmt(m.mse)}` : `r_u=${fmt(m['und/reward'])} r_g=${fmt(m['gen/reward'])}`;
        bar.update(m.step, cfg.steps, `${what} |g|=${fmt(m.grad_norm, 2)} ${fmt(m['time/step'], 2)}s/step`);
      },
    });
    bar.done();
    console.log(`pairuni train: ${res.steps} steps done; checkpoint ${res.checkpoint}${res.restarts ? ` (${res.restarts} sidecar restarts)` : ''}`);
    return 0;
  } catch (e) {
    bar.done();
    if (e instanceof AbortedError) {
      console.error(`pairuni train: ${e.message}`);
      return 130;
    }
    // The SDK's message names its options (`resume: true`); here the user typed flags.
    if (e instanceof RunStateError && e.cliMessage !== e.message) throw new RunStateError(e.cliMessage, { cause: e });
    throw e;
  } finally {
    interrupt.dispose();
  }
}
