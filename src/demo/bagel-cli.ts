/** The CLI side of `pairuni demo --family bagel` (kept apart so other families' demos merge beside it). */
import { runDemoCli } from './cli-run.js';
import { type BagelDemoOptions, runBagelDemo } from './bagel.js';

export async function runBagelCli(opts: BagelDemoOptions): Promise<number> {
  return runDemoCli(
    'SFT',
    (hooks) => runBagelDemo({ ...opts, ...hooks }),
    (res) => {
      const pm = (x: { mean: number; std: number }) => `${x.mean.toFixed(3)} ± ${x.std.toFixed(3)}`;
      const gen = (x: { mean: number; half: number }) =>
        `${x.mean.toFixed(3)}${Number.isFinite(x.half) ? ` ± ${x.half.toFixed(3)} (95% CI)` : ''}`;
      console.log(
        `pretrained:          und acc ${res.before.und_accuracy.toFixed(3)}, gen reward ${res.before.gen_reward.toFixed(3)}`,
      );
      console.log(`SFT on PairUG:       und acc ${pm(res.summary.pairug)}, gen reward ${gen(res.genSummary.pairug)}`);
      console.log(`SFT on random pairs: und acc ${pm(res.summary.random)}, gen reward ${gen(res.genSummary.random)}`);
      console.log(
        `report: ${res.report} (${res.seconds} s${res.wallSeconds !== res.seconds ? `; ${res.wallSeconds} s over all invocations` : ''})`,
      );
    },
  );
}
