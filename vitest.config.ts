import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/ts/**/*.test.ts'],
    globalSetup: ['tests/ts/global-tmp.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Sidecar tests spawn Python processes; two cores do not like many at once.
    pool: 'forks',
    maxWorkers: 2,
    fileParallelism: true,
  },
});
