/**
 * Where this package is installed. CommonJS on purpose: the package ships an ESM build (dist/) and a
 * CommonJS build (dist/cjs/), `import.meta` does not parse in CommonJS, while `__dirname` exists in a
 * .cjs file that either build loads. Walking up to the package.json named `pairuni` finds the root
 * from src/ (tsx, vitest), dist/ and dist/cjs/ alike.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

// No type annotations: Vite (vitest) reads .cts files as plain JavaScript.
function findRoot(from = '') {
  for (let dir = from; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === 'pairuni') return dir;
    if (dirname(dir) === dir)
      throw new Error(`no package.json named 'pairuni' above ${from}: the package's files were moved out of it`);
  }
}

/** The package root (where package.json, python_sidecar/ and assets/ are). */
export const PACKAGE_ROOT = findRoot(__dirname);
