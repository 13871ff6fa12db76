/**
 * The documentation's own checks: the link checker (run by `npm test` before vitest) fails on a
 * broken link or anchor, and the README's quick start is examples/quickstart.ts verbatim (the file
 * is what `npm run typecheck` compiles and the examples test runs).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const root = new URL('../../../', import.meta.url).pathname;
const script = join(root, 'scripts', 'check-links.mjs');
const check = (dir: string) => spawnSync(process.execPath, [script, dir], { encoding: 'utf8' });

describe('scripts/check-links.mjs', () => {
  let dir = '';
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** A README and docs/guide.md whose links all resolve; `extra` is appended to the guide. */
  const site = (extra = '') => {
    dir = mkdtempSync(join(tmpdir(), 'pairuni-links-'));
    mkdirSync(join(dir, 'docs', 'sub'), { recursive: true });
    mkdirSync(join(dir, 'src'));
    writeFileSync(join(dir, 'src', 'a.ts'), '');
    writeFileSync(join(dir, 'README.md'), '# Title\n\nSee [the guide](docs/guide.md#step-2-pair), [src](src/) and [a](src/a.ts).\n');
    writeFileSync(join(dir, 'docs', 'sub', 'deep.md'), '[up](../guide.md#the-api-sidecarspawn) [web](https://example.com/missing.md)\n');
    writeFileSync(
      join(dir, 'docs', 'guide.md'),
      '# Guide\n\n## Step 2: pair\n\n## The API: `Sidecar.spawn()`\n\n[self](#guide) [deep](sub/deep.md)\n\n```md\n[in code](nowhere.md)\n```\n`[span](nowhere.md)`\n' + extra,
    );
  };

  it('passes when every relative link and anchor resolves (code and external links are not checked)', () => {
    site();
    const r = check(dir);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/3 files, every relative link resolves/);
  });

  it('fails on a link to a missing file, naming the file, line and target', () => {
    site('\nsee [lora](lora.md)\n');
    const r = check(dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/docs\/guide\.md:14: broken link lora\.md: docs\/lora\.md does not exist/);
    expect(r.stderr).toMatch(/1 broken link/);
  });

  it('fails on an anchor that names no heading of the target', () => {
    site('[bad](../README.md#no-such-heading) [dup](#guide-1)\n');
    const r = check(dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/broken link \.\.\/README\.md#no-such-heading: README\.md has no heading #no-such-heading/);
    expect(r.stderr).toMatch(/broken link #guide-1: docs\/guide\.md has no heading #guide-1/);
    expect(r.stderr).toMatch(/2 broken link/);
  });

  it('resolves an anchor to an explicit <a id> (the generated API reference writes table rows so), not to one in code', () => {
    site('| <a id="property-code-13"></a> `code` |\n\n`<a id="in-span"></a>`\n\n[row](#property-code-13) [span](#in-span)\n');
    const r = check(dir);
    expect(r.status).toBe(1);
    expect(r.stderr).not.toMatch(/property-code-13/);
    expect(r.stderr).toMatch(/broken link #in-span: docs\/guide\.md has no heading #in-span/);
    expect(r.stderr).toMatch(/1 broken link/);
  });

  it("passes on this repository's README.md and docs/", () => {
    const r = check(root);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});

describe('README quick start', () => {
  it('is examples/quickstart.ts verbatim, at most 30 lines', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const file = readFileSync(join(root, 'examples', 'quickstart.ts'), 'utf8');
    const start = readme.indexOf('\n## Quick start');
    expect(start).toBeGreaterThan(-1);
    const block = /\n```ts\n([\s\S]*?)```\n/.exec(readme.slice(start));
    expect(block?.[1]).toBe(file);
    expect(file.trimEnd().split('\n').length).toBeLessThanOrEqual(30);
  });

  it("lists every command of src/cli/commands in the README's command table, and no other", () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const listed = [...readme.matchAll(/^\| `pairuni (\w+)` \|/gm)].map((m) => m[1]).sort();
    const commands = readdirSync(join(root, 'src', 'cli', 'commands')).map((f) => f.replace(/\.ts$/, '')).sort();
    expect(listed).toEqual(commands);
  });

  it('keeps the README at most 150 lines', () => {
    expect(readFileSync(join(root, 'README.md'), 'utf8').trimEnd().split('\n').length).toBeLessThanOrEqual(150);
  });
});
