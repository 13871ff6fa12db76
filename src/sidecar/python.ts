/** Where the sidecar's Python lives: PAIRUNI_PYTHON, else the venv that `npm install` created. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { PACKAGE_ROOT } from './package-root.cjs';

export { PACKAGE_ROOT };

export function defaultVenv(): string {
  return process.env.PAIRUNI_VENV ?? join(PACKAGE_ROOT, '.venv');
}

/** The Python interpreter a sidecar runs: `explicit`, else $PAIRUNI_PYTHON, else the package's venv, else `python3` on PATH. */
export function resolvePython(explicit?: string): string {
  if (explicit) return explicit;
  if (process.env.PAIRUNI_PYTHON) return process.env.PAIRUNI_PYTHON;
  const venvPy = join(defaultVenv(), 'bin', 'python');
  if (existsSync(venvPy)) return venvPy;
  return 'python3';
}

export function sidecarSourceDir(): string {
  return join(PACKAGE_ROOT, 'python_sidecar');
}
