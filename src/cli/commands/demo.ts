/** `pairuni demo`: the whole pipeline on ShapesWorld with the shipped tiny Janus, on CPU. */
import { parseArgs } from 'node:util';
import { ConfigError } from '../../errors.js';
import { runDemo, validateDemoOptions, type DemoOptions } from '../../demo/demo.js';
import { runBagelCli } from '../../demo/bagel-cli.js';
import { runDemoCli } from '../../demo/cli-run.js';

export const summary = 'ShapesWorld end to end: pair, PairGRPO vs random pairs, before/after eval, report';

/** Digits only: `Number()` would also take '', ' 3', '1e2', '0x10' (and give NaN for 'abc'). */
function integer(v: string, flag: string, min: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min) {
    throw new ConfigError(`${flag} must be ${min > 0 ? 'a positive integer' : 'an integer >= 0'}, got '${v}'`);
  }
  return n;
}

function seedList(v: string): number[] {
  const seeds = v.split(',').map((x) => {
    try {
      return integer(x.trim(), '--seeds', 0);
    } catch {
      throw new ConfigError(`--seeds must be a comma-separated list of integers >= 0 (e.g. 0,1,2), got '${v}'`);
    }
  });
  if (new Set(seeds).size !== seeds.length) throw new ConfigError(`--seeds must not repeat a seed, got '${v}'`);
  return seeds;
}

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
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(`usage: pairuni demo [--family janus|dimoo|bagel] [--out runs/demo] [--quick] [--seeds 0,1,2] [--steps N] [--parallel 2] [--model DIR]
--family bagel: SFT of a tiny random-init Bagel on PairUG vs random pairs (out default runs/demo-bagel).

Builds ShapesWorld, pairs it (PairUG and a random-pairs baseline), evaluates the shipped tiny Janus,
runs PairGRPO on both pair sets for every seed, evaluates again and writes OUT/report.md.
--family dimoo uses the shipped tiny masked-diffusion (Lumina-DiMOO style) model instead.
Ctrl-C stops cleanly; the same command resumes.`);
    return 0;
  }
  if (values.family === 'bagel') {
    return runBagelCli({
      out: values.out === 'runs/demo' ? 'runs/demo-bagel' : values.out ?? 'runs/demo-bagel',
      quick: values.quick,
      seeds: values.seeds === undefined ? undefined : seedList(values.seeds),
      steps: values.steps === undefined ? undefined : integer(values.steps, '--steps', 1),
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
    steps: values.steps === undefined ? undefined : integer(values.steps, '--steps', 1),
    parallel: values.parallel === undefined ? undefined : integer(values.parallel, '--parallel', 1),
  };
  validateDemoOptions(opts);
  return runDemoCli('PairGRPO', (hooks) => runDemo({ ...opts, ...hooks }), (res) => {
    const s = res.summary;
    const ci = (c: { mean: number; half: number }, signed = false) =>
      `${signed && c.mean >= 0 ? '+' : ''}${c.mean.toFixed(3)}${Number.isFinite(c.half) ? ` ± ${c.half.toFixed(3)}` : ''}`;
    console.log(`pretrained:        und acc ${res.before.und_accuracy.toFixed(3)}, gen reward ${res.before.gen_reward.toFixed(3)}`);
    console.log(`PairGRPO (PairUG): und acc ${ci(s.pairgrpo.und)}, gen reward ${ci(s.pairgrpo.gen)} (95% CI)`);
    console.log(`random pairs:      und acc ${ci(s.random.und)}, gen reward ${ci(s.random.gen)} (95% CI)`);
    console.log(`PairUG − random:   und ${ci(res.paired.und, true)}, gen ${ci(res.paired.gen, true)} (paired by seed, 95% CI)`);
    console.log(`und–gen gradient cosine: PairUG ${ci(s.pairgrpo.gradCos)}, random ${ci(s.random.gradCos)}, difference ${ci(res.paired.gradCos, true)}`);
    console.log(`report: ${res.report} (${res.seconds} s)`);
  });
}
