#!/usr/bin/env node
/**
 * `npm test`: the type check, the link check, the API reference check, the formatters' checks, vitest
 * and pytest, side by side. Most of each suite's
 * time is one process waiting on another (a sidecar importing torch, a torchrun rendezvous), and pytest
 * runs one test at a time: run one after the other, they leave a core idle for much of the run.
 *
 * Each job's output is held and printed whole when it ends (interleaved logs are unreadable),
 * under a line with its result and wall time; a summary of every job closes the run. Exit 0 only if
 * every job passed. `npm run test:ts` / `npm run test:py` run one suite with live output.
 *
 *   node scripts/test.mjs
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { root, venvPython } from './venv-python.mjs';

const bin = (name) => join(root, 'node_modules', '.bin', name);
const jobs = [
  { name: 'typecheck', cmd: bin('tsc'), args: ['-p', 'tsconfig.json', '--noEmit'] },
  { name: 'check-links', cmd: process.execPath, args: [join(root, 'scripts', 'check-links.mjs')] },
  { name: 'api-docs', cmd: process.execPath, args: [join(root, 'scripts', 'api-docs.mjs'), '--check'] },
  // One line width (120) for both languages: .prettierrc.json, ruff.toml. `npm run format` fixes both.
  { name: 'prettier', cmd: bin('prettier'), args: ['--check', '--log-level', 'warn', '.'] },
  // ruff is pinned in requirements.lock: the sidecar venv runs it.
  { name: 'ruff check', cmd: venvPython, args: ['-m', 'ruff', 'check', '.'] },
  { name: 'ruff format', cmd: venvPython, args: ['-m', 'ruff', 'format', '--check', '.'] },
  { name: 'vitest (tests/ts)', cmd: bin('vitest'), args: ['run'] },
  { name: 'pytest (tests/py)', cmd: process.execPath, args: [join(root, 'scripts', 'pytest.mjs')] },
];

// Held output loses the terminal: keep the colours a terminal would have shown.
const env = process.stdout.isTTY && !process.env.NO_COLOR ? { ...process.env, FORCE_COLOR: '1' } : process.env;
// A terminal's Ctrl-C reaches every job (one process group): they stop, and their output still prints.
let interrupted = false;
process.on('SIGINT', () => (interrupted = true));

const t0 = Date.now();
console.log(
  `[test] ${jobs.map((j) => j.name).join(', ')}: running side by side; each one's output follows when it ends`,
);
const results = await Promise.all(
  jobs.map(
    (job) =>
      new Promise((resolve) => {
        const start = Date.now();
        const chunks = [];
        const child = spawn(job.cmd, job.args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
        child.stdout.on('data', (d) => chunks.push(d));
        child.stderr.on('data', (d) => chunks.push(d));
        let ended = false;
        const done = (code, signal, error) => {
          if (ended) return; // 'error' and 'close' can both come
          ended = true;
          const s = Math.round((Date.now() - start) / 1000);
          const ok = code === 0;
          const how = error
            ? `could not start: ${error.message}`
            : ok
              ? 'passed'
              : signal
                ? `killed by ${signal}`
                : `failed (exit ${code})`;
          process.stdout.write(`\n[test] ── ${job.name}: ${how} in ${s} s ──\n`);
          process.stdout.write(Buffer.concat(chunks));
          resolve({ name: job.name, ok, how, s });
        };
        child.on('error', (e) => done(null, null, e));
        child.on('close', (code, signal) => done(code, signal));
      }),
  ),
);
console.log(`\n[test] summary (${Math.round((Date.now() - t0) / 1000)} s wall):`);
for (const r of results) console.log(`[test]   ${r.ok ? 'ok  ' : 'FAIL'} ${r.name}: ${r.how} in ${r.s} s`);
// exitCode, not exit(): held output written to a pipe must drain first.
process.exitCode = results.every((r) => r.ok) ? 0 : interrupted ? 130 : 1;
