/** `pairuni demo`: the whole pipeline on ShapesWorld with the shipped tiny Janus, on CPU. */
import { parseArgs } from 'node:util';
import { AbortedError } from '../../errors.js';
import { runDemo } from '../../demo/demo.js';
import { onInterrupt } from '../../util/interrupt.js';
import { Progress } from '../../util/progress.js';

export const summary = 'ShapesWorld end to end: pair, PairGRPO vs random pairs, before/after eval, report';

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string', default: 'runs/demo' },
      model: { type: 'string' },
      seeds: { type: 'string' },
      steps: { type: 'string' },
      parallel: { type: 'string' },
      quick: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(`usage: pairuni demo [--out runs/demo] [--quick] [--seeds 0,1,2] [--steps N] [--parallel 2] [--model DIR]

Builds ShapesWorld, pairs it (PairUG and a random-pairs baseline), evaluates the shipped tiny Janus,
runs PairGRPO on both pair sets for every seed, evaluates again and writes OUT/report.md.
Ctrl-C stops cleanly; the same command resumes.`);
    return 0;
  }
  const interrupt = onInterrupt({ message: '[demo] stopping at the next step boundary' });
  let bar: Progress | undefined;
  const seen = new Map<string, number>();
  try {
    const res = await runDemo({
      out: values.out!,
      model: values.model,
      quick: values.quick,
      seeds: values.seeds?.split(',').map(Number),
      steps: values.steps ? Number(values.steps) : undefined,
      parallel: values.parallel ? Number(values.parallel) : undefined,
      signal: interrupt.signal,
      log: (l) => console.error(l),
      onStep: (runName, step, total, runs) => {
        bar ??= new Progress({ label: 'PairGRPO', total: total * runs, unit: 'steps' });
        seen.set(runName, step);
        bar.update([...seen.values()].reduce((a, b) => a + b, 0), undefined, runName);
      },
    });
    bar?.done();
    const s = res.summary;
    console.log(`pretrained:        und acc ${res.before.und_accuracy.toFixed(3)}, gen reward ${res.before.gen_reward.toFixed(3)}`);
    console.log(`PairGRPO (PairUG): und acc ${s.pairgrpo.und.mean.toFixed(3)} ± ${s.pairgrpo.und.std.toFixed(3)}, gen reward ${s.pairgrpo.gen.mean.toFixed(3)} ± ${s.pairgrpo.gen.std.toFixed(3)}`);
    console.log(`random pairs:      und acc ${s.random.und.mean.toFixed(3)} ± ${s.random.und.std.toFixed(3)}, gen reward ${s.random.gen.mean.toFixed(3)} ± ${s.random.gen.std.toFixed(3)}`);
    console.log(`report: ${res.report} (${res.seconds} s)`);
    return 0;
  } catch (e) {
    if (e instanceof AbortedError) {
      console.error(`[demo] ${e.message}`);
      return 130;
    }
    throw e;
  } finally {
    interrupt.dispose();
  }
}
