/**
 * The `pairuni` command line: parse errors (one line, exit 2, for every command), numeric option
 * ranges, output/cache locations and empty manifests refused before any work, and user paths
 * resolved against the user's working directory.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { joinNegativeValues } from '../../../src/cli/index.js';
import { tinySet } from '../pairing/_data.js';
import { pairuni as run } from './_pairuni.js';

const RUNNER = join(dirname(fileURLToPath(import.meta.url)), '_run.ts');
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

const dir = mkdtempSync(join(tmpdir(), 'pairuni-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const pairuni = (...argv: string[]) => run(argv);

/** `pairuni ...` as a child process in `cwd` (the way a user runs it). */
function pairuniProcess(
  cwd: string,
  ...argv: string[]
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, ['--import', TSX, RUNNER, ...argv], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolveRun({ code, stdout, stderr }));
  });
}

describe('unknown flags and other parse errors (handled once, in src/cli/index.ts)', () => {
  const oneLine = async (cmd: string) => {
    const r = await pairuni(cmd, '--no-such-flag', 'x');
    expect(r.code).toBe(2);
    expect(r.err).toEqual([`pairuni ${cmd}: Unknown option '--no-such-flag' (see 'pairuni ${cmd} --help')`]);
    expect(r.out).toEqual([]);
  };
  // These parse with node's parseArgs and let its error through to main().
  for (const cmd of ['demo', 'embed', 'pair', 'doctor', 'samples'])
    it(`pairuni ${cmd} --no-such-flag: one line naming the flag, exit 2`, () => oneLine(cmd));
  for (const cmd of ['complete', 'train'])
    it(`pairuni ${cmd} --no-such-flag: one line naming the flag, exit 2`, () => oneLine(cmd));

  it('a missing option value is a parse error too', async () => {
    const r = await pairuni('pair', '--u');
    expect(r).toMatchObject({
      code: 2,
      err: ["pairuni pair: Option '--u <value>' argument missing (see 'pairuni pair --help')"],
    });
  });

  it('from the shell: exit status 2, one line on stderr, no stack trace', async () => {
    const r = await pairuniProcess(dir, 'embed', '--u', 'a', '--bogus');
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("pairuni embed: Unknown option '--bogus' (see 'pairuni embed --help')\n");
    expect(r.stdout).toBe('');
  });

  it('a negative number after an option is its value', () => {
    expect(joinNegativeValues(['--threshold', '-1', '--seed', '-2.5e3', '--k', '3'])).toEqual([
      '--threshold=-1',
      '--seed=-2.5e3',
      '--k',
      '3',
    ]);
    expect(joinNegativeValues(['--out', '-x', '--', '--a', '-1'])).toEqual(['--out', '-x', '--', '--a', '-1']);
  });
});

describe('numeric options: a ConfigError naming the option and its range, before any work', () => {
  const missing = join(dir, 'missing.jsonl'); // never read: the options are refused first
  const base = (cmd: string) => [
    cmd,
    '--u',
    missing,
    '--g',
    missing,
    ...(cmd === 'pair' ? ['--out', join(dir, 'never')] : []),
    '--quiet',
  ];
  const cases: [string, string[], string][] = [
    ['pair', ['--threshold', '2'], "--threshold must be a number in [-1, 1], got '2'"],
    ['pair', ['--threshold', '-1.5'], "--threshold must be a number in [-1, 1], got '-1.5'"],
    ['pair', ['--threshold', 'high'], "--threshold must be a number in [-1, 1], got 'high'"],
    ['pair', ['--k', '0'], "--k must be an integer >= 1, got '0'"],
    ['pair', ['--k', '2.5'], "--k must be an integer >= 1, got '2.5'"],
    ['pair', ['--top-n', '0'], "--top-n must be an integer >= 1, got '0'"],
    ['pair', ['--kmeans-batch', '-8'], "--kmeans-batch must be an integer >= 1, got '-8'"],
    ['pair', ['--max-epochs', '0'], "--max-epochs must be a number > 0, got '0'"],
    ['pair', ['--refine', '-1'], "--refine must be an integer >= 0, got '-1'"],
    ['pair', ['--subset', '0'], "--subset must be an integer >= 1, got '0'"],
    ['pair', ['--seed', '1.5'], "--seed must be an integer, got '1.5'"],
    ['pair', ['--embed-batch', '0'], "--embed-batch must be an integer >= 1, got '0'"],
    ['pair', ['--backbone', 'pixels', '--size', '513'], "--size must be an integer in [1, 512], got '513'"],
    ['embed', ['--embed-batch', '-3'], "--embed-batch must be an integer >= 1, got '-3'"],
    ['embed', ['--embed-batch', ''], "--embed-batch must be an integer >= 1, got ''"],
    ['embed', ['--backbone', 'pixels', '--size', '0'], "--size must be an integer in [1, 512], got '0'"],
  ];
  for (const [cmd, args, msg] of cases) {
    it(`${cmd} ${args.join(' ')}`, async () => {
      const r = await pairuni(...base(cmd), ...args);
      expect(r.code).toBe(1);
      expect(r.err).toEqual([`pairuni ${cmd}: ConfigError [config]: ${msg}`]);
    });
  }

  it('--threshold -1 (the lower end) is accepted as a value', async () => {
    // --k 0 is refused after --threshold and --seed were read: they parsed.
    for (const t of [['--threshold', '-1'], ['--threshold=-1']]) {
      const r = await pairuni(...base('pair'), ...t, '--seed', '-7', '--k', '0');
      expect(r.err).toEqual(["pairuni pair: ConfigError [config]: --k must be an integer >= 1, got '0'"]);
    }
  });
});

describe('output and cache locations are checked before any work', () => {
  it('pair --out under a file: one line naming the path; nothing read, nothing embedded', async () => {
    const file = join(dir, 'existing_file');
    writeFileSync(file, 'x');
    const cache = join(dir, 'cache-out-check');
    const r = await pairuni(
      'pair',
      '--u',
      join(dir, 'missing.jsonl'),
      '--g',
      join(dir, 'missing.jsonl'),
      '--out',
      join(file, 'sub'),
      '--cache-dir',
      cache,
      '--backbone',
      'pixels',
      '--quiet',
    );
    expect(r.code).toBe(1);
    expect(r.err).toEqual([
      `pairuni pair: ConfigError [config]: output directory ${join(file, 'sub')} is not usable: ${file} is a file, not a directory`,
    ]);
    expect(existsSync(cache)).toBe(false);
  });
});

describe('empty manifests', () => {
  it('embed and pair refuse an empty U or G manifest with a DataError naming the file, before starting a sidecar', async () => {
    const s = tinySet(2, 2);
    const empty = join(s.dir, 'empty.jsonl');
    writeFileSync(empty, '\n');
    const cache = join(s.dir, 'cache');
    let r = await pairuni('embed', '--u', empty, '--g', s.g, '--backbone', 'pixels', '--cache-dir', cache, '--quiet');
    expect(r.code).toBe(1);
    expect(r.err).toEqual([
      `pairuni embed: DataError [data]: ${empty}: the understanding (U) manifest has no records; pairing needs at least one`,
    ]);
    r = await pairuni(
      'pair',
      '--u',
      s.u,
      '--g',
      empty,
      '--out',
      join(s.dir, 'out'),
      '--backbone',
      'pixels',
      '--cache-dir',
      cache,
      '--quiet',
    );
    expect(r.code).toBe(1);
    expect(r.err).toEqual([
      `pairuni pair: DataError [data]: ${empty}: the generation (G) manifest has no records; pairing needs at least one`,
    ]);
    expect(existsSync(cache)).toBe(false);
    expect(existsSync(join(s.dir, 'out'))).toBe(false);
  });
});

describe("user paths are relative to the user's working directory", () => {
  it('a relative --weights is looked up under the cwd (found there; a missing one is named by its absolute path)', async () => {
    const s = tinySet(1, 1);
    mkdirSync(join(s.dir, 'weights'));
    writeFileSync(join(s.dir, 'weights', 'resnet50.pth'), 'not a state dict');
    const common = [
      'embed',
      '--u',
      'u.jsonl',
      '--g',
      'g.jsonl',
      '--cache-dir',
      'cache',
      '--quiet',
      '--backbone',
      'resnet50',
    ];
    const [found, absent] = await Promise.all([
      pairuniProcess(s.dir, ...common, '--weights', 'weights/resnet50.pth'),
      pairuniProcess(s.dir, ...common, '--weights', 'resnet50.pth'),
    ]);
    // The file exists only under the user's cwd: the sidecar opened it (and refused its contents).
    expect(found.code).toBe(1);
    expect(found.stderr).toContain(`cannot read weights file '${join(s.dir, 'weights', 'resnet50.pth')}'`);
    expect(absent.code).toBe(1);
    expect(absent.stderr).toContain(`weights path '${join(s.dir, 'resnet50.pth')}' does not exist`);
  });

  it('relative --u/--g/--cache-dir/--out: pair with the pixels backbone writes under the cwd', async () => {
    const s = tinySet(6, 6);
    const r = await pairuniProcess(
      s.dir,
      'pair',
      '--u',
      'u.jsonl',
      '--g',
      'g.jsonl',
      '--out',
      'out',
      '--cache-dir',
      'cache',
      '--backbone',
      'pixels',
      '--size',
      '4',
      '--k',
      '2',
      '--quiet',
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readdirSync(join(s.dir, 'out')).sort()).toEqual(
      expect.arrayContaining(['pairs.arrow', 'pairs.jsonl', 'stats.json']),
    );
    expect(existsSync(join(s.dir, 'cache'))).toBe(true);
  });
});
