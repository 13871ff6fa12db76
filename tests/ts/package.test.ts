/**
 * What `npm pack` ships: a project that depends on pairuni runs `npx pairuni demo` from
 * node_modules/pairuni, so every file of the demos' shipped tiny models must be in the package.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BAGEL_DEMO_MODEL } from '../../src/demo/bagel.js';
import { DEMO_MODELS } from '../../src/demo/demo.js';
import { PACKAGE_ROOT } from '../../src/sidecar/python.js';

describe('the npm package', () => {
  it("lists every file of the demos' pretrained models (npm pack --dry-run)", () => {
    // --ignore-scripts: `prepare` would build dist/; what is listed does not depend on it for assets/.
    const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: PACKAGE_ROOT,
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const packed = new Set(
      (JSON.parse(r.stdout) as Array<{ files: Array<{ path: string }> }>)[0].files.map((f) => f.path),
    );
    for (const [family, dir] of Object.entries({ ...DEMO_MODELS, bagel: BAGEL_DEMO_MODEL })) {
      const files = readdirSync(dir).map((f) => relative(PACKAGE_ROOT, join(dir, f)));
      expect(files.length, family).toBeGreaterThan(2);
      expect(
        files.filter((f) => !packed.has(f)),
        `${family}: files missing from the package`,
      ).toEqual([]);
    }
  }, 180_000);
});
