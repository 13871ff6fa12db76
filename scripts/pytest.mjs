#!/usr/bin/env node
// Runs the Python test suite with the sidecar venv's interpreter (`npm run test:py`).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root, venvPython as py } from './venv-python.mjs';
if (!existsSync(py) && !process.env.PAIRUNI_PYTHON) {
  console.error(`[pairuni] ${py} not found: run \`npm install\` (it creates the sidecar venv) or set PAIRUNI_PYTHON.`);
  process.exit(1);
}
// A private temp root (pytest's tmp_path dirs and whatever the sidecar makes), removed afterwards, so
// a run leaves nothing in /tmp; anything a test left outside tmp_path is named and fails the run.
const tmp = mkdtempSync(join(tmpdir(), 'pairuni-pytest-'));
// Paths or node ids on the command line run just those; none runs the whole suite.
const args = process.argv.slice(2);
const paths = args.some((a) => existsSync(join(root, a.split('::')[0]))) ? [] : ['tests/py'];
const r = spawnSync(
  py,
  ['-m', 'pytest', ...paths, '-q', '-p', 'no:cacheprovider', `--basetemp=${join(tmp, 'basetemp')}`, ...args],
  {
    cwd: root,
    stdio: 'inherit',
    env: {
      ...process.env,
      TMPDIR: tmp,
      TORCHINDUCTOR_CACHE_DIR: join(tmp, 'torchinductor'),
      // The trackers' own files (tests/ts/global-tmp.ts says which), kept out of $HOME.
      WANDB_CACHE_DIR: join(tmp, 'wandb-cache'),
      WANDB_DATA_DIR: join(tmp, 'wandb-data'),
      MLFLOW_DISABLE_TELEMETRY: 'true',
      PYTHONPATH: [join(root, 'python_sidecar'), process.env.PYTHONPATH].filter(Boolean).join(':'),
    },
  },
);
// pytest's, torch's and the trackers' own
const left = readdirSync(tmp).filter((f) => !['basetemp', 'torchinductor', 'wandb-cache', 'wandb-data'].includes(f));
rmSync(tmp, { recursive: true, force: true });
if (left.length) {
  console.error(`[pairuni] tests left ${left.length} entries in their TMPDIR: ${left.slice(0, 20).join(', ')}`);
  process.exit(1);
}
// pytest exits 5 when it collected nothing: that is a broken suite, not a pass.
process.exit(r.status ?? 1);
