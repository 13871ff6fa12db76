/** Where the sidecar's Python lives: PAIRUNI_PYTHON, else the venv that `npm install` created. */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (works from src/ under tsx and from dist/ after the build). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

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
