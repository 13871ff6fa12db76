import { defineConfig } from 'vitest/config';
import HeavyFirst from './tests/ts/heavy-first.js';

export default defineConfig({
  test: {
    include: ['tests/ts/**/*.test.ts'],
    globalSetup: ['tests/ts/global-tmp.ts'],
    // A test fails for what it asserts, never because the machine is busy (docs/testing.md): most tests
    // start a Python sidecar, which imports torch (seconds quietly, a minute on shared cores). A hang
    // still fails, after these 5 minutes; tests that train or run demos state their own, longer limit.
    testTimeout: 300_000,
    hookTimeout: 300_000,
    // Sidecar tests spawn Python processes; two cores do not like many at once.
    pool: 'forks',
    maxWorkers: 2,
    fileParallelism: true,
    sequence: { sequencer: HeavyFirst },
  },
});
