/** `pairuni ...` in this process, for the CLI tests: its exit status and the lines it printed. */
import { vi } from 'vitest';
import { main } from '../../../src/cli/index.js';

/**
 * Runs `pairuni <argv>` through the CLI's `main`, capturing console.log (`out`) and console.error
 * (`err`); with `stderrWrites`, also what is written to process.stderr directly (progress, the sidecar's
 * relayed lines), one entry per line, so a test can assert that nothing else was printed.
 */
export async function pairuni(
  argv: string[],
  opts: { stderrWrites?: boolean } = {},
): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const spies = [
    vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' '))),
    vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void err.push(a.join(' '))),
  ];
  if (opts.stderrWrites) {
    spies.push(
      vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
        err.push(...String(chunk).split('\n').filter(Boolean));
        return true;
      }) as never,
    );
  }
  try {
    return { code: await main(argv), out, err };
  } finally {
    for (const s of spies) s.mockRestore();
  }
}
