/**
 * Ctrl-C / SIGTERM handling shared by every long-running CLI command.
 *
 * Two stages because a long step (an embedding batch, a training step, a paid request) should be
 * allowed to finish and save, yet a user who does not want to wait must still be able to leave:
 * the first signal only aborts, the second exits at once with the conventional 128 + SIGINT.
 */

export const INTERRUPTED_EXIT_CODE = 130;

export interface InterruptOptions {
  /** What the command does before stopping, e.g. 'pairuni train: stopping after this step'. */
  message?: string;
  /** Receives the full first-interrupt line instead of stderr (for commands with their own logger). */
  onFirst?: (line: string) => void;
}

export interface Interrupt {
  /** Aborted by the first SIGINT/SIGTERM. */
  signal: AbortSignal;
  /** Removes the handlers; call it when the guarded work is over (a `finally`). */
  dispose(): void;
}

const SIGNALS = ['SIGINT', 'SIGTERM'] as const;

export function onInterrupt(opts: InterruptOptions = {}): Interrupt {
  const ac = new AbortController();
  // The hint is appended here so every command tells the user the same thing about the second press.
  const line = `${opts.message ?? 'interrupted: stopping'} (Ctrl-C again to quit at once)`;
  const handler = (): void => {
    if (ac.signal.aborted) process.exit(INTERRUPTED_EXIT_CODE);
    if (opts.onFirst) opts.onFirst(line);
    // The leading newline keeps the line off a progress bar drawn on the current line.
    else process.stderr.write(`\n${line}\n`);
    ac.abort();
  };
  for (const s of SIGNALS) process.on(s, handler);
  return {
    signal: ac.signal,
    dispose: () => {
      for (const s of SIGNALS) process.off(s, handler);
    },
  };
}
