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

/**
 * The environment of a Python child running the sidecar's package (the sidecar, the trackers' child):
 * this process's, unbuffered, with the package's source first on `PYTHONPATH` so a source checkout
 * works when the package is not pip-installed in that interpreter. `PYTHONSAFEPATH`: `python -m` would
 * put the working directory first on sys.path, and a user's `torch/` or `transformers.py` there would
 * shadow the real packages (Python >= 3.11). `extra` is applied before `PYTHONPATH` is prefixed.
 */
export function pythonEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    PYTHONUNBUFFERED: '1',
    PYTHONSAFEPATH: '1',
    ...extra,
  };
  env.PYTHONPATH = [sidecarSourceDir(), env.PYTHONPATH].filter(Boolean).join(':');
  return env;
}
