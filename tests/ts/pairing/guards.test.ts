/**
 * buildPairUG / embedImages refuse unusable arguments before any work: nothing is read, no sidecar
 * op is called (the stand-in sidecar throws on any use).
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, DataError } from '../../../src/errors.js';
import { embedImages } from '../../../src/pairing/embed.js';
import { buildPairUG, checkOutputDir, embedManifests } from '../../../src/pairing/pipeline.js';
import type { Sidecar } from '../../../src/sidecar/index.js';

const dir = mkdtempSync(join(tmpdir(), 'pairuni-guards-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A sidecar that must not be touched. */
const untouchable = new Proxy(
  {},
  {
    get: (_t, p) => {
      if (p === 'then') return undefined; // not a thenable
      throw new Error(`sidecar used (.${String(p)}) before the arguments were checked`);
    },
  },
) as Sidecar;

describe('buildPairUG output directory', () => {
  it('an --out under a file is refused, naming the path, before the manifests are read or anything embedded', async () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'x');
    const out = join(file, 'sub');
    const cacheDir = join(dir, 'cache');
    const e = await buildPairUG({
      understanding: join(dir, 'missing-u.jsonl'),
      generation: join(dir, 'missing-g.jsonl'),
      out,
      backbone: { kind: 'pixels' },
      cacheDir,
      sidecar: untouchable,
    }).catch((x) => x);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toBe(`output directory ${out} is not usable: ${file} is a file, not a directory`);
    expect(existsSync(cacheDir)).toBe(false);
    // the out path itself being a file
    expect(() => checkOutputDir(file)).toThrow(
      `output directory ${file} is not usable: it exists and is not a directory`,
    );
    // deeper under a file, and a creatable path (nothing is created by the check)
    expect(() => checkOutputDir(join(file, 'a', 'b'))).toThrow(`${file} is a file, not a directory`);
    expect(() => checkOutputDir(join(dir, 'new', 'deeper'))).not.toThrow();
    expect(existsSync(join(dir, 'new'))).toBe(false);
  });

  it('a feature cache directory under a file is refused the same way, before the manifests are read', async () => {
    const file = join(dir, 'another-file');
    writeFileSync(file, 'x');
    const e = await buildPairUG({
      understanding: join(dir, 'missing-u.jsonl'),
      generation: join(dir, 'missing-g.jsonl'),
      out: join(dir, 'out'),
      backbone: { kind: 'pixels' },
      cacheDir: join(file, 'cache'),
      sidecar: untouchable,
    }).catch((x) => x);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toBe(
      `feature cache directory ${join(file, 'cache')} is not usable: ${file} is a file, not a directory`,
    );
    expect(existsSync(join(dir, 'out'))).toBe(false);
  });
});

describe('manifests are read before a sidecar is used', () => {
  it('an empty manifest fails without touching the sidecar (embedManifests and buildPairUG)', async () => {
    const empty = join(dir, 'empty.jsonl');
    writeFileSync(empty, '');
    const cacheDir = join(dir, 'cache-empty');
    for (const run of [
      () =>
        embedManifests({
          understanding: empty,
          generation: empty,
          backbone: { kind: 'pixels' },
          cacheDir,
          sidecar: untouchable,
        }),
      () =>
        buildPairUG({
          understanding: empty,
          generation: empty,
          out: join(dir, 'o'),
          backbone: { kind: 'pixels' },
          cacheDir,
          sidecar: untouchable,
        }),
    ]) {
      const e = await run().catch((x) => x);
      expect(e).toBeInstanceOf(DataError);
      expect(e.message).toBe(`${empty}: the understanding (U) manifest has no records; pairing needs at least one`);
    }
    expect(existsSync(cacheDir)).toBe(false);
  });
});

describe('embedImages arguments', () => {
  it('a batch size below 1 is a ConfigError, not an endless loop', async () => {
    for (const batchSize of [0, -4, 1.5]) {
      const e = await embedImages([], {
        sidecar: untouchable,
        backbone: { kind: 'pixels' },
        cacheDir: join(dir, 'c'),
        batchSize,
      }).catch((x) => x);
      expect(e).toBeInstanceOf(ConfigError);
      expect(e.message).toBe(`batchSize must be an integer >= 1, got ${batchSize}`);
    }
  });
});
