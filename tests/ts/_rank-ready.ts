/**
 * Waiting for a rank started by hand (`python -X importtime -m pairuni_sidecar --connect ...`) to be
 * ready to connect. A test whose attach must time out (a refused key, a rank that never arrives) cannot
 * let that timeout also cover the rank's start: importing torch takes a minute on busy cores. `-X
 * importtime` logs each module as its import completes; once the server module is in, the rank creates
 * its sockets and connects within milliseconds, so the attach's limit covers only the handshake.
 */
import type { ChildProcess } from 'node:child_process';

/** The interpreter flag that makes `untilImported` work: put it before `-m pairuni_sidecar`. */
export const IMPORT_LOG = ['-X', 'importtime'];

/** Resolves once `child` (spawned with IMPORT_LOG and stderr piped) has imported its server. */
export function untilImported(child: ChildProcess, what: string): Promise<void> {
  let err = '';
  return new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      err += d;
      if (/\| +pairuni_sidecar\.server$/m.test(err)) resolve();
    });
    child.on('exit', (code) =>
      reject(new Error(`${what} exited (${code}) before it imported its server:\n${err.slice(-2000)}`)),
    );
  });
}
