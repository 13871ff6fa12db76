#!/usr/bin/env node
// `npm run format`'s Python half: `ruff check --fix` and `ruff format` with the sidecar venv's ruff (pinned in
// python_sidecar/requirements.lock), configured by ruff.toml.
import { spawnSync } from 'node:child_process';
import { root, venvPython as py } from './venv-python.mjs';
for (const args of [
  ['check', '--fix', '.'],
  ['format', '.'],
]) {
  const r = spawnSync(py, ['-m', 'ruff', ...args], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
