#!/usr/bin/env node
// Creates the sidecar's virtual environment in <repo>/.venv and installs python_sidecar into it.
// Runs as npm's postinstall so that a fresh clone is ready after `npm install`.
// Set PAIRUNI_SKIP_VENV=1 to skip (e.g. when you manage Python yourself and set PAIRUNI_PYTHON).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync, mkdirSync, renameSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const venv = process.env.PAIRUNI_VENV ?? join(root, '.venv');
const lock = join(root, 'python_sidecar', 'requirements.lock');
// Packages whose declared dependencies must not be resolved (the Bagel model code): --no-deps.
const noDepsLock = join(root, 'python_sidecar', 'requirements-bagel.lock');
const stamp = join(venv, '.pairuni-stamp');

if (process.env.PAIRUNI_SKIP_VENV === '1') {
  console.log('[pairuni] PAIRUNI_SKIP_VENV=1: not creating the sidecar venv');
  process.exit(0);
}

function run(cmd, args, what) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root });
  if (r.error || r.status !== 0) {
    console.error(`[pairuni] ${what} failed (${cmd} ${args.join(' ')}): ${r.error?.message ?? 'exit ' + r.status}`);
    console.error('[pairuni] fix the cause above, then re-run `npm install` (or `node scripts/setup-python.mjs`).');
    process.exit(1);
  }
}

function findPython() {
  const candidates = [process.env.PAIRUNI_BOOTSTRAP_PYTHON, 'python3.11', 'python3.12', 'python3'].filter(Boolean);
  for (const c of candidates) {
    const r = spawnSync(c, ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])'], { encoding: 'utf8' });
    if (r.status === 0) {
      const [maj, min] = r.stdout.trim().split('.').map(Number);
      if (maj === 3 && min >= 10) return c;
    }
  }
  console.error(
    '[pairuni] no Python >= 3.10 found (tried python3.11, python3.12, python3). Install one, or set PAIRUNI_BOOTSTRAP_PYTHON.',
  );
  process.exit(1);
}

const hash = createHash('sha256')
  .update(readFileSync(lock))
  .update(readFileSync(noDepsLock))
  .update(readFileSync(join(root, 'python_sidecar', 'pyproject.toml')))
  .digest('hex')
  .slice(0, 16);
if (existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === hash) {
  console.log(`[pairuni] sidecar venv up to date: ${venv}`);
  process.exit(0);
}

const py = join(venv, 'bin', 'python');
if (!existsSync(py)) {
  console.log(`[pairuni] creating the sidecar venv at ${venv}`);
  mkdirSync(dirname(venv), { recursive: true });
  run(findPython(), ['-m', 'venv', venv], 'creating the venv');
}
console.log('[pairuni] installing pinned sidecar requirements (torch CPU wheel; first run takes a few minutes)');
run(py, ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', '-r', lock], 'pip install -r requirements.lock');
run(
  py,
  ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', '--no-deps', '-r', noDepsLock],
  'pip install --no-deps -r requirements-bagel.lock',
);
run(
  py,
  ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', '--no-deps', '-e', join(root, 'python_sidecar')],
  'pip install -e python_sidecar',
);
const tmp = stamp + '.tmp';
writeFileSync(tmp, hash + '\n');
renameSync(tmp, stamp);
console.log(`[pairuni] sidecar venv ready: ${py}`);
