// The sidecar venv's interpreter for the repository's scripts: $PAIRUNI_PYTHON, else the venv at
// $PAIRUNI_VENV or <repo>/.venv (what `npm install` creates). The SDK's own lookup is src/sidecar/python.ts.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const venvPython =
  process.env.PAIRUNI_PYTHON ?? join(process.env.PAIRUNI_VENV ?? join(root, '.venv'), 'bin', 'python');
