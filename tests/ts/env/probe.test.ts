import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { probe } from '../../../src/env/probe.js';

const saved = { venv: process.env.PAIRUNI_VENV, python: process.env.PAIRUNI_PYTHON, path: process.env.PATH };
afterEach(() => {
  for (const [k, v] of [
    ['PAIRUNI_VENV', saved.venv],
    ['PAIRUNI_PYTHON', saved.python],
    ['PATH', saved.path],
  ] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

describe('probe (what `pairuni doctor` reports)', () => {
  it('the venv npm install made: torch, the sidecar package and its ops, no fatal problem', async () => {
    const r = await probe();
    expect(r.python).toMatch(/\.venv\/bin\/python$/);
    expect(r.problems.filter((p) => p.fatal)).toEqual([]);
    expect(r.torch).toMatch(/^2\.13\.0/);
    expect(r.packages.pyzmq).toBeTruthy();
    expect(r.sidecar).toBeTruthy();
    expect(r.ops).toContain('tensor.sum');
  });

  it('an interpreter that cannot run is fatal, named, with a fix', async () => {
    const r = await probe({ python: '/nonexistent/bin/python' });
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]).toMatchObject({ fatal: true });
    expect(r.problems[0]!.what).toContain('/nonexistent/bin/python');
    expect(r.problems[0]!.fix).toMatch(/setup-python\.mjs|npm install/);
  });

  it('no venv and a bare system python: says how to create the venv (npm 11 may have skipped the postinstall)', async () => {
    // A `python3` on PATH that sees no site-packages (-S) stands for a system Python without torch.
    const real = spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).stdout.trim();
    const bin = mkdtempSync(join(tmpdir(), 'pairuni-bare-python-'));
    writeFileSync(join(bin, 'python3'), `#!/bin/sh\nexec ${real} -S "$@"\n`);
    chmodSync(join(bin, 'python3'), 0o755);
    process.env.PATH = `${bin}:${process.env.PATH}`;
    process.env.PAIRUNI_VENV = '/nonexistent/pairuni-venv';
    delete process.env.PAIRUNI_PYTHON;
    const r = await probe().finally(() => rmSync(bin, { recursive: true, force: true }));
    expect(r.python).toBe('python3');
    expect(r.packages.torch).toBeNull();
    const torch = r.problems.find((p) => p.what.includes("'torch'"));
    expect(torch).toMatchObject({ fatal: true });
    expect(torch!.fix).toMatch(/node .*scripts\/setup-python\.mjs/);
    expect(torch!.fix).toContain('npm install-scripts approve pairuni');
  });
});
