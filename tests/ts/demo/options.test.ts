/**
 * `pairuni demo` / runDemo check every option before any work: a bad --steps or --seeds used to cost a
 * world build, pairing and an evaluation, then fail, and leave `"steps": null` in plan.json, which
 * made every later (valid) run on that --out refuse to resume.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { run as cli } from '../../../src/cli/commands/demo.js';
import { runDemo, type DemoOptions } from '../../../src/demo/demo.js';
import { ConfigError } from '../../../src/errors.js';

const root = mkdtempSync(join(tmpdir(), 'pairuni-demo-opts-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(root, `out-${n++}`);

describe('runDemo options', () => {
  it('a NaN step count fails at once: no world, no sidecar, nothing written to out', async () => {
    const out = fresh();
    // Should the demo start working anyway, stop it at its first log line so the test stays short.
    const ac = new AbortController();
    const lines: string[] = [];
    const err = await runDemo({
      out,
      quick: true,
      steps: Number('abc'),
      signal: ac.signal,
      log: (l) => (lines.push(l), ac.abort()),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe('demo: steps must be a positive integer, got NaN');
    expect(lines).toEqual([]);
    expect(existsSync(out)).toBe(false);
  });

  it.each<[Partial<DemoOptions>, RegExp]>([
    [{ steps: 0 }, /steps must be a positive integer, got 0/],
    [{ steps: 2.5 }, /steps must be a positive integer, got 2.5/],
    [{ seeds: [] }, /seeds must be a non-empty list/],
    [{ seeds: [0, Number('b')] }, /every seed must be an integer >= 0, got NaN/],
    [{ seeds: [-1] }, /every seed must be an integer >= 0, got -1/],
    [{ seeds: [1, 1] }, /seeds must not repeat/],
    [{ parallel: 0 }, /parallel must be a positive integer, got 0/],
    [{ parallel: Infinity }, /parallel must be a positive integer, got Infinity/],
    [{ model: '' }, /model must be a model directory path/],
  ])('%j is refused before any work', async (bad, message) => {
    const out = fresh();
    // A model that does not exist: if the options were not checked first, its error would come instead.
    const err = await runDemo({ out, quick: true, model: join(root, 'no-model'), ...bad }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(message);
    expect(existsSync(out)).toBe(false);
  });

  it('an out that is a file is refused by name', async () => {
    const file = join(root, 'scratch.jsonl');
    writeFileSync(file, '');
    await expect(runDemo({ out: file, quick: true, model: join(root, 'no-model') })).rejects.toThrow(
      `demo: out ${file} is a file, not a directory`,
    );
  });
});

describe('pairuni demo (CLI) options', () => {
  it.each<[string[], RegExp]>([
    [['--steps', 'abc'], /--steps must be an integer >= 1, got 'abc'/],
    [['--steps', ''], /--steps must be an integer >= 1, got ''/],
    [['--steps', '1e2'], /--steps must be an integer >= 1, got '1e2'/],
    [['--steps', '0'], /--steps must be an integer >= 1, got '0'/],
    [['--seeds', 'a,b'], /--seeds must be a comma-separated list of integers >= 0 \(e\.g\. 0,1,2\), got 'a,b'/],
    [['--seeds', ''], /--seeds must be a comma-separated list/],
    [['--seeds', '0,,1'], /--seeds must be a comma-separated list/],
    [['--seeds', '0,0'], /--seeds must not repeat a seed, got '0,0'/],
    [['--parallel', 'two'], /--parallel must be an integer >= 1, got 'two'/],
    [['--out', ''], /--out must name a directory/],
  ])('%j fails before any work, writing nothing', async (args, message) => {
    const out = fresh();
    const err = await cli(['--out', out, '--quick', '--model', join(root, 'no-model'), ...args]).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(message);
    expect(existsSync(out)).toBe(false);
  });
});
