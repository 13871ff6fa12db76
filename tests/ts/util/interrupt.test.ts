import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const CHILD = fileURLToPath(new URL('./interrupt-child.ts', import.meta.url));

function start(mode: string): {
  child: ChildProcess;
  stderr: () => string;
  waitFor: (line: string) => Promise<void>;
  exit: Promise<number | null>;
} {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters: Array<() => void> = [];
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    for (const w of waiters.splice(0)) w();
  });
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const waitFor = (line: string) =>
    new Promise<void>((resolve) => {
      const check = () => (out.split('\n').includes(line) ? resolve() : waiters.push(check));
      check();
    });
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, stderr: () => err, waitFor, exit };
}

describe('onInterrupt', () => {
  it('aborts on the first SIGINT and lets the process exit on its own terms', async () => {
    const c = start('once');
    await c.waitFor('ready');
    c.child.kill('SIGINT');
    await c.waitFor('aborted');
    expect(await c.exit).toBe(7);
    expect(c.stderr()).toContain('child: stopping (Ctrl-C again to quit at once)');
  });

  it('exits with 130 on the second SIGINT', async () => {
    const c = start('twice');
    await c.waitFor('ready');
    c.child.kill('SIGINT');
    await c.waitFor('aborted');
    c.child.kill('SIGINT');
    expect(await c.exit).toBe(130);
  });

  it('treats SIGTERM like SIGINT', async () => {
    const c = start('twice');
    await c.waitFor('ready');
    c.child.kill('SIGTERM');
    await c.waitFor('aborted');
    c.child.kill('SIGTERM');
    expect(await c.exit).toBe(130);
  });
});
