/**
 * Every script in examples/ is something users copy, so each runs the way it would in a user's project:
 * `npm pack` (its `prepare` builds dist/ and dist/cjs/), the tarball installed into a fresh project made
 * by `npm init -y` (CommonJS), the `.ts` examples in a `"type": "module"` folder of it run with tsx, the
 * `.cjs` ones with plain node. The project is type-checked against the installed declarations first.
 * Python: the tarball's postinstall is skipped (PAIRUNI_SKIP_VENV) and PAIRUNI_PYTHON points the SDK at
 * this checkout's venv; the sidecar's code is the tarball's (the SDK puts it first on PYTHONPATH).
 */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT, resolvePython } from '../../src/sidecar/python.js';

const examplesDir = join(PACKAGE_ROOT, 'examples');
const examples = readdirSync(examplesDir)
  .filter((f) => /\.(ts|cjs)$/.test(f))
  .sort();
const require = createRequire(import.meta.url);
const tsx = pathToFileURL(require.resolve('tsx')).href;
const tsc = require.resolve('typescript/bin/tsc');
const typesNode = dirname(dirname(require.resolve('@types/node/package.json')));
// Node >= 20.19 can require() an ES module; turned off, require() behaves as on Node 20.10 (the floor),
// so the CommonJS runs prove the CommonJS build, not that fallback.
const commonJsOnly = process.allowedNodeEnvironmentFlags.has('--experimental-require-module')
  ? ['--no-experimental-require-module']
  : [];

let root = '';
let project = '';
const env = { ...process.env, PAIRUNI_SKIP_VENV: '1', PAIRUNI_PYTHON: resolvePython() };
const seconds: Record<string, number> = {};
const t0 = performance.now();

/** Runs a command to completion; a failure shows its output. */
function run(what: string, cmd: string, args: string[], opts: SpawnSyncOptions = {}): string {
  const t = performance.now();
  const r = spawnSync(cmd, args, { cwd: project, env, encoding: 'utf8', timeout: 840_000, ...opts });
  seconds[what] = (performance.now() - t) / 1000;
  expect(r.status, `${what} failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stdout}\n${r.stderr}`).toBe(0);
  return String(r.stdout);
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'pairuni-pack-'));
  project = join(root, 'project');
  const packed = run('npm pack', 'npm', ['pack', '--json', '--pack-destination', root], { cwd: PACKAGE_ROOT });
  const tarball = join(root, (JSON.parse(packed) as Array<{ filename: string }>)[0].filename);
  mkdirSync(project);
  run('npm init', 'npm', ['init', '-y']);
  // --prefer-offline: npm's cache answers when it can (this checkout's install filled it), the registry otherwise.
  run('npm install', 'npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball]);
  mkdirSync(join(project, 'esm'));
  writeFileSync(join(project, 'esm', 'package.json'), '{ "type": "module" }\n');
  for (const f of examples) copyFileSync(join(examplesDir, f), join(project, f.endsWith('.ts') ? 'esm' : '', f));
  writeFileSync(
    join(project, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        module: 'nodenext',
        target: 'es2022',
        strict: true,
        noEmit: true,
        allowJs: true,
        checkJs: true,
        skipLibCheck: true,
        types: ['node'],
        typeRoots: [typesNode],
      },
      include: ['esm/*.ts', '*.cjs'],
    }),
  );
}, 900_000);

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
  const parts = Object.entries(seconds).map(([k, s]) => `${k} ${s.toFixed(1)} s`);
  console.log(
    `packed-tarball examples: ${((performance.now() - t0) / 1000).toFixed(1)} s in all (${parts.join(', ')})`,
  );
});

describe('examples, from the packed tarball in a fresh project', () => {
  it('exist, ESM and CommonJS', () => {
    expect(examples.filter((f) => f.endsWith('.ts')).length).toBeGreaterThan(0);
    expect(examples.filter((f) => f.endsWith('.cjs')).length).toBeGreaterThan(0);
  });

  it('type-check against the installed declarations (import and require conditions)', () => {
    run('tsc', process.execPath, [tsc, '-p', 'tsconfig.json']);
  }, 600_000);

  it("require() loads the CommonJS build, import() the ESM one; each build's errors are its classes", () => {
    const check = `
      const assert = require('node:assert');
      const cjs = require('pairuni');
      assert.match(require.resolve('pairuni'), /node_modules\\/pairuni\\/dist\\/cjs\\/index\\.js$/);
      assert.equal(typeof require('pairuni/testing').writeTinyPairUG, 'function');
      assert.equal(typeof require('pairuni/protocol').encodeHeaderFrame, 'function');
      const thrown = (parse) => { try { parse({ steps: 2 }); } catch (e) { return e; } };
      const e = thrown(cjs.parseTrainConfig);
      assert.ok(e instanceof cjs.ConfigError && e instanceof cjs.PairuniError, String(e));
      import('pairuni').then((esm) => {
        const e2 = thrown(esm.parseTrainConfig);
        assert.ok(e2 instanceof esm.ConfigError && e2 instanceof esm.PairuniError, String(e2));
        console.log(e.name, e2.name);
      });`;
    expect(run('require/import', process.execPath, [...commonJsOnly, '-e', check]).trim()).toBe(
      'ConfigError ConfigError',
    );
  }, 120_000);

  for (const f of examples) {
    it(`${f} runs`, () => {
      // Examples that write results take an output directory as their first argument (users keep theirs).
      const out = join(root, `out-${f}`);
      const args = f.endsWith('.ts') ? ['--import', tsx, join('esm', f), out] : [...commonJsOnly, f, out];
      run(f, process.execPath, args);
    }, 900_000); // spawnSync's limit comes first, so the failure names the example
  }
});
