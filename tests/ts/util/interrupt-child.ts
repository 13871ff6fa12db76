/**
 * Child process for interrupt.test.ts. argv[2]: 'once' exits with code 7 after the first signal
 * aborts (the command's own clean exit); 'twice' keeps working so a second signal must end it.
 */
import { onInterrupt } from '../../../src/util/interrupt.js';

const mode = process.argv[2];
const { signal, dispose } = onInterrupt({ message: 'child: stopping' });
// Only a safety net (a broken handler must not leave the child running): far beyond any busy machine's delays.
const keepAlive = setTimeout(() => process.exit(99), 240_000);
signal.addEventListener('abort', () => {
  process.stdout.write('aborted\n');
  if (mode === 'once') {
    dispose();
    clearTimeout(keepAlive);
    process.exitCode = 7;
  }
});
process.stdout.write('ready\n');
