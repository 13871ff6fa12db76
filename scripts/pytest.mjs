#!/usr/bin/env node
// Runs the Python test suite with the sidecar venv's interpreter (`npm run test:py`).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const py = process.env.PAIRUNI_PYTHON ?? join(process.env.PAIRUNI_VENV ?? join(root, '.venv'), 'bin', 'python');
if (!existsSync(py) && !process.env.PAIRUNI_PYTHON) {
  console.error(`[pairuni] ${py} not found: run \`npm install\` (it creates the sidecar venv) or set PAIRUNI_PYTHON.`);
  process.exit(1);
}
const r = spawnSync(py, ['-m', 'pytest', 'tests/py', '-q', ...process.argv.slice(2)], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, PYTHONPATH: [join(root, 'python_sidecar'), process.env.PYTHONPATH].filter(Boolean).join(':') },
});
// pytest exits 5 when it collected nothing: that is a broken suite, not a pass.
process.exit(r.status ?? 1);
