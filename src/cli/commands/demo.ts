/** `pairuni demo`: the whole pipeline on ShapesWorld with the shipped tiny Janus, on CPU. */
import { parseArgs } from 'node:util';
import { ConfigError } from '../../errors.js';
import { DEMO_MODELS, runDemo, validateDemoOptions, type DemoOptions } from '../../demo/demo.js';
import { runBagelCli } from '../../demo/bagel-cli.js';
import { runDemoCli } from '../../demo/cli-run.js';
import { intOpt } from '../options.js';

export const summary = 'ShapesWorld end to end: pair, PairGRPO vs random pairs, before/after eval, report';

function seedList(v: string): number[] {
  const seeds = v.split(',').map((x) => {
    try {
      return intOpt(x.trim(), '--seeds', { min: 0 });
    } catch {
      throw new ConfigError(`--seeds must be a comma-separated list of integers >= 0 (e.g. 0,1,2), got '${v}'`);
    }
  });
  if (new Set(seeds).size !== seeds.length) throw new ConfigError(`--seeds must not repeat a seed, got '${v}'`);
  return seeds;
}

/** Every family `--family` takes: the shipped tiny models' and Bagel's (a random init built by the demo). */
export const DEMO_FAMILIES = [...Object.keys(DEMO_MODELS), 'bagel'] as const;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string', default: 'runs/demo' },
      model: { type: 'string' },
      family: { type: 'string' },
      seeds: { type: 'string' },
      steps: { type: 'string' },
      parallel: { type: 'string' },
      quick: { type: 'boolean' },
      'eval-every': { type: 'string' },
      loggers: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(`usage: pairuni demo [--family janus|dimoo|bagel] [--out runs/demo] [--quick] [--seeds 0,1,2] [--steps N] [--parallel 2] [--model DIR]
                    [--eval-every N] [--loggers jsonl,tensorboard,wandb,mlflow]
--family bagel: SFT of the shipped tiny pretrained Bagel on PairUG vs random pairs (out default runs/demo-bagel).

Builds ShapesWorld, pairs it (PairUG and a random-pairs baseline), evaluates the shipped tiny Janus,
runs PairGRPO on both pair sets for every seed, evaluates again and writes OUT/report.md.
--family dimoo uses the shipped tiny masked-diffusion (Lumina-DiMOO style) model instead.
--eval-every N evaluates every run on held-out pairs each N steps (eval/* in metrics, a table in the
report); --loggers picks the experiment trackers each run reports to (wandb: offline, OUT/runs/*/wandb).
Ctrl-C stops cleanly; the same command resumes.`);
    return 0;
  }
  if (values.family !== undefined && !(DEMO_FAMILIES as readonly string[]).includes(values.family)) {
    throw new ConfigError(`--family must be one of ${DEMO_FAMILIES.join(', ')}, got '${values.family}'`);
  }
  if (values.family === 'bagel') {
    // The Bagel demo trains its own shipped model, one run after another: refuse what it would ignore.
    const ignored = (['model', 'parallel', 'eval-every', 'loggers'] as const).filter((k) => values[k] !== undefined);
    if (ignored.length) {
      throw new ConfigError(
        `${ignored.map((k) => `--${k}`).join(' and ')} cannot be used with --family bagel: it trains the shipped tiny Bagel (assets/tiny-bagel-shapes), one run at a time, evaluating before and after`,
      );
    }
    return runBagelCli({
      out: values.out === 'runs/demo' ? 'runs/demo-bagel' : (values.out ?? 'runs/demo-bagel'),
      quick: values.quick,
      seeds: values.seeds === undefined ? undefined : seedList(values.seeds),
      steps: values.steps === undefined ? undefined : intOpt(values.steps, '--steps', { min: 1 }),
    });
  }
  // Every option is checked before anything runs or is written to --out.
  if (!values.out) throw new ConfigError(`--out must name a directory, got '${values.out}'`);
  if (values.model === '') throw new ConfigError(`--model must name a model directory, got ''`);
  const opts: DemoOptions = {
    out: values.out,
    model: values.model,
    family: values.family as DemoOptions['family'],
    quick: values.quick,
    seeds: values.seeds === undefined ? undefined : seedList(values.seeds),
    steps: values.steps === undefined ? undefined : intOpt(values.steps, '--steps', { min: 1 }),
    parallel: values.parallel === undefined ? undefined : intOpt(values.parallel, '--parallel', { min: 1 }),
    evalEvery:
      values['eval-every'] === undefined ? undefined : intOpt(values['eval-every'], '--eval-every', { min: 0 }),
    loggers:
      values.loggers === undefined
        ? undefined
        : (values.loggers.split(',').map((x) => x.trim()) as NonNullable<DemoOptions['loggers']>),
  };
  validateDemoOptions(opts);
  return runDemoCli(
    'PairGRPO',
    (hooks) => runDemo({ ...opts, ...hooks }),
    (res) => {
      const s = res.summary;
      const ci = (c: { mean: number; half: number }, signed = false) =>
        `${signed && c.mean >= 0 ? '+' : ''}${c.mean.toFixed(3)}${Number.isFinite(c.half) ? ` ± ${c.half.toFixed(3)}` : ''}`;
      console.log(
        `pretrained:        und acc ${res.before.und_accuracy.toFixed(3)}, gen reward ${res.before.gen_reward.toFixed(3)}`,
      );
      console.log(`PairGRPO (PairUG): und acc ${ci(s.pairgrpo.und)}, gen reward ${ci(s.pairgrpo.gen)} (95% CI)`);
      console.log(`random pairs:      und acc ${ci(s.random.und)}, gen reward ${ci(s.random.gen)} (95% CI)`);
      console.log(
        `PairUG − random:   und ${ci(res.paired.und, true)}, gen ${ci(res.paired.gen, true)} (paired by seed, 95% CI)`,
      );
      console.log(
        `und–gen gradient cosine: PairUG ${ci(s.pairgrpo.gradCos)}, random ${ci(s.random.gradCos)}, difference ${ci(res.paired.gradCos, true)}`,
      );
      console.log(`report: ${res.report} (${res.seconds} s)`);
    },
  );
}
