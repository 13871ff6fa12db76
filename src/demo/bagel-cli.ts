/** The CLI side of `pairuni demo --family bagel` (kept apart so other families' demos merge beside it). */
import { AbortedError } from '../errors.js';
import { onInterrupt } from '../util/interrupt.js';
import { Progress } from '../util/progress.js';
import { type BagelDemoOptions, runBagelDemo } from './bagel.js';

export async function runBagelCli(opts: BagelDemoOptions): Promise<number> {
  const interrupt = onInterrupt({ message: '[demo] stopping at the next step boundary' });
  let bar: Progress | undefined;
  const seen = new Map<string, number>();
  try {
    const res = await runBagelDemo({
      ...opts,
      signal: interrupt.signal,
      log: (l) => console.error(l),
      onStep: (run, step, total, runs) => {
        bar ??= new Progress({ label: 'SFT', total: total * runs, unit: 'steps' });
        seen.set(run, step);
        bar.update([...seen.values()].reduce((a, b) => a + b, 0), undefined, run);
      },
    });
    bar?.done();
    const pm = (x: { mean: number; std: number }) => `${x.mean.toFixed(3)} ± ${x.std.toFixed(3)}`;
    console.log(`random init:         und acc ${res.before.und_accuracy.toFixed(3)}`);
    console.log(`SFT on PairUG:       und acc ${pm(res.summary.pairug)}`);
    console.log(`SFT on random pairs: und acc ${pm(res.summary.random)}`);
    console.log(`generation: not measured (no flow sampler); report: ${res.report} (${res.seconds} s)`);
    return 0;
  } catch (e) {
    bar?.done();
    if (e instanceof AbortedError) {
      console.error(`[demo] ${e.message}`);
      return 130;
    }
    throw e;
  } finally {
    interrupt.dispose();
  }
}
