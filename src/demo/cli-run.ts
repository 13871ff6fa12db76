/** The CLI side shared by every demo arm: Ctrl-C stops at a step boundary, one progress bar over all runs. */
import { AbortedError } from '../errors.js';
import { RunStateError } from '../train/checkpoint.js';
import { onInterrupt } from '../util/interrupt.js';
import { Progress } from '../util/progress.js';

export interface DemoHooks {
  signal: AbortSignal;
  log: (line: string) => void;
  onStep: (run: string, step: number, total: number, runs: number) => void;
}

/** Runs `run` with the hooks, then `report` on its result; exit code 0, or 130 when interrupted. */
export async function runDemoCli<T>(
  label: string,
  run: (hooks: DemoHooks) => Promise<T>,
  report: (res: T) => void,
): Promise<number> {
  const interrupt = onInterrupt({ message: '[demo] stopping at the next step boundary' });
  let bar: Progress | undefined;
  const seen = new Map<string, number>();
  try {
    const res = await run({
      signal: interrupt.signal,
      log: (l) => console.error(l),
      onStep: (name, step, total, runs) => {
        bar ??= new Progress({ label, total: total * runs, unit: 'steps' });
        seen.set(name, step);
        bar.update(
          [...seen.values()].reduce((a, b) => a + b, 0),
          undefined,
          name,
        );
      },
    });
    bar?.done();
    report(res);
    return 0;
  } catch (e) {
    bar?.done();
    if (e instanceof AbortedError) {
      console.error(`[demo] ${e.message}`);
      return 130;
    }
    // The SDK's message names its options (`out`); here the user typed flags (`--out`), as for `train`.
    if (e instanceof RunStateError && e.cliMessage !== e.message) throw new RunStateError(e.cliMessage, { cause: e });
    throw e;
  } finally {
    interrupt.dispose();
  }
}
