/**
 * Starts the longest test files first (vitest.config.ts `sequence.sequencer`). Two workers run the
 * files; on a fresh clone vitest has no durations yet and starts the largest files first, which put
 * the quick demo (four minutes, one test after another) near the end, alone on one core. Longest
 * first keeps both workers busy to the end. The list is by CPU seconds per file (docs/testing.md);
 * files not named keep vitest's own order after it.
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const HEAVY = [
  'tests/ts/demo/demo.test.ts',
  'tests/ts/examples.test.ts',
  'tests/ts/grpo/trainer.test.ts',
  'tests/ts/demo/bagel-demo.test.ts',
  'tests/ts/demo/demo-dimoo.test.ts',
  'tests/ts/ranks.test.ts',
  'tests/ts/sidecar.test.ts',
  'tests/ts/grpo/loggers.test.ts',
];

export default class HeavyFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rest = await super.sort(files);
    const rank = (f: TestSpecification) => {
      const i = HEAVY.findIndex((h) => f.moduleId.endsWith(`/${h}`));
      return i < 0 ? HEAVY.length : i;
    };
    return [...rest].sort((a, b) => rank(a) - rank(b)); // stable: the rest keep vitest's order
  }
}
