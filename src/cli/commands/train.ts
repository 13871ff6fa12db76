/**
 * `pairuni train --config run.yaml [--set a.b=c ...] [--print-config] [--resume] [--steps N] [--out DIR]`: PairGRPO training (or SFT for
 * an adapter that declares only `sft`, such as Bagel) with a progress bar. Ctrl-C stops at the next step boundary and saves a checkpoint (a second Ctrl-C exits
 * at once); `--resume` continues from the run directory's latest checkpoint.
 */
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { AbortedError } from '../../errors.js';
import {
  applyConfigSets,
  type ConfigSet,
  formatTrainConfig,
  parseConfigSet,
  parseUntrustedTrainConfig,
  readTrainConfigFile,
} from '../../train/config.js';
import { RunStateError, train } from '../../train/trainer.js';
import { onInterrupt } from '../../util/interrupt.js';
import { stderrLogger } from '../../util/log.js';
import { Progress } from '../../util/progress.js';
import { intOpt, USAGE_EXIT } from '../options.js';

export const summary = 'train a unified VLM with PairGRPO on a PairUG file (checkpoints, resume, TensorBoard)';

const HELP = `usage: pairuni train --config <run.yaml|run.json> [options]

  --config <file>   training config, YAML (.yaml, .yml) or JSON (any other name); paths relative to it;
                    its keys and defaults are listed under "Config keys" in the package's docs/training.md
  --set <key=value> override one config key by its dotted path, e.g. --set loss.beta=0.04
                    (repeatable; the value is read as JSON when it parses, else as a string)
  --print-config    print the resolved config, every default filled in, and exit (trains nothing)
  --resume          continue from <out>/checkpoints/latest
  --steps <n>       override config.steps
  --out <dir>       override config.out
  --data <file>     override config.data
  --model <dir>     override config.model.path
  --ranks <n>       override config.sidecar.ranks: n ranks on this host (torchrun, FSDP2 data parallel)
  --quiet           no progress bar
  -h, --help        this text

Writes <out>/metrics.jsonl, <out>/tensorboard/, <out>/samples/, <out>/checkpoints/step-NNNNNN/; with W&B or
MLflow in config.loggers also <out>/wandb/, <out>/mlruns/, <out>/loggers.json (docs/training.md#experiment-sinks).
Exit codes: 0 done, 130 stopped by Ctrl-C (checkpoint saved), 2 a bad command line, 1 any other error.`;

const fmt = (x: number | undefined, d = 3) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d));

export async function run(argv: string[]): Promise<number> {
  // Unknown flags and missing values are reported by the one handler in src/cli/index.ts.
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' },
      set: { type: 'string', multiple: true, default: [] },
      'print-config': { type: 'boolean', default: false },
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
  const sets: ConfigSet[] = [];
  for (const arg of values.set) {
    const s = parseConfigSet(arg);
    if (!s) {
      console.error(`pairuni train: --set takes key.path=value, got '${arg}' (see 'pairuni train --help')`);
      return USAGE_EXIT;
    }
    sets.push(s);
  }
  // The fixed flags are --set under another name, applied last. Paths given on the command line are
  // relative to the working directory (the config's to its file).
  if (values.steps !== undefined) sets.push({ path: ['steps'], value: intOpt(values.steps, '--steps', { min: 1 }) });
  if (values.out) sets.push({ path: ['out'], value: resolve(values.out) });
  if (values.data) sets.push({ path: ['data'], value: resolve(values.data) });
  if (values.model) sets.push({ path: ['model', 'path'], value: resolve(values.model) });
  if (values.ranks !== undefined)
    sets.push({ path: ['sidecar', 'ranks'], value: intOpt(values.ranks, '--ranks', { min: 1 }) });
  const { raw, format } = readTrainConfigFile(values.config);
  const cfg = parseUntrustedTrainConfig(applyConfigSets(raw, sets), dirname(resolve(values.config)), values.config);
  if (values['print-config']) {
    console.log(formatTrainConfig(cfg, format));
    return 0;
  }

  const interrupt = onInterrupt({ message: 'pairuni train: stopping after this step' });
  const bar = new Progress({ label: 'train', total: cfg.steps, unit: 'step', silent: values.quiet });
  try {
    const res = await train(cfg, {
      resume: values.resume,
      signal: interrupt.signal,
      // At the default level (info; $PAIRUNI_LOG) the trainer's notices and the sidecar's warnings show,
      // not its raw stderr: Python's and torchrun's tracebacks (a corrupt checkpoint, Ctrl-C with
      // --ranks 2) arrive at debug, since the typed error printed after them says the same.
      logger: stderrLogger,
      onStep: (m) => {
        // SFT steps (an adapter that declares only `sft`, e.g. Bagel) report their loss terms instead of rewards.
        const what =
          'ce' in m ? `ce=${fmt(m.ce)} mse=${fmt(m.mse)}` : `r_u=${fmt(m['und/reward'])} r_g=${fmt(m['gen/reward'])}`;
        bar.update(m.step, cfg.steps, `${what} |g|=${fmt(m.grad_norm, 2)} ${fmt(m['time/step'], 2)}s/step`);
      },
    });
    bar.done();
    console.log(
      `pairuni train: ${res.steps} steps done; checkpoint ${res.checkpoint}${res.restarts ? ` (${res.restarts} sidecar restarts)` : ''}`,
    );
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
