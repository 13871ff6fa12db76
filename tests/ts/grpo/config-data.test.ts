import { mkdtempSync, rmSync, unlinkSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, DataError } from '../../../src/errors.js';
import { writeTinyPairUG } from '../../../src/train/fixtures.js';
import {
  loadPairUG,
  parseTrainConfig,
  parseUntrustedTrainConfig,
  stepIndices,
  stepSeed,
  TrainConfig,
} from '../../../src/train/index.js';
import { writeCheckpoint, latestCheckpoint, assertResumable } from '../../../src/train/checkpoint.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'pairuni-cfg-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('TrainConfig', () => {
  it("defaults are the paper's §3 settings (Janus-Pro-7B)", () => {
    const c = parseTrainConfig({ data: 'd.jsonl', out: 'o', model: { path: 'm' } }, '/base');
    expect(c.mode).toBe('pairgrpo');
    expect(c.und.k).toBe(4);
    expect(c.gen.k).toBe(4);
    expect(c.batchPairs).toBe(16);
    expect(c.gen.cfgWeight).toBe(5);
    expect(c.loss.beta).toBe(0);
    expect(c.optim.lr).toBe(1e-6);
    expect(c.und.temperature).toBe(1);
    expect(c.gen.temperature).toBe(1);
    expect(c.steps).toBe(1200);
    expect(c.gen.reward).toEqual({ name: 'hps', config: {} });
    expect(c.model.trainModules).toEqual(['language_model']);
    expect(c.data).toBe('/base/d.jsonl');
    expect(c.model.path).toBe('/base/m');
  });
  it('rejects bad values with the field path (an empty group: k = 0)', () => {
    expect(() => parseTrainConfig({ data: 'd', out: 'o', model: { path: 'm' }, und: { k: 0 } })).toThrow(ConfigError);
    expect(() => parseTrainConfig({ data: 'd', out: 'o', model: { path: 'm' }, und: { k: 0 } })).toThrow(/und\.k/);
    // Mistakes the types let through only from untyped input (tests/ts/types.test-d.ts: they fail to compile).
    expect(() => parseUntrustedTrainConfig({ data: 'd', out: 'o', model: { path: 'm' }, mode: 'sqrt' })).toThrow(
      /mode/,
    );
    expect(() => parseUntrustedTrainConfig({ data: 'd', out: 'o', model: { path: 'm' }, lr: 1 })).toThrow(
      /Unrecognized key/,
    );
  });
  it('resume compatibility names the differing fields', () => {
    const a = parseTrainConfig({ data: 'd', out: 'o', model: { path: 'm' } });
    expect(() => assertResumable(a, { ...a, steps: 5, out: 'other' })).not.toThrow();
    expect(() => assertResumable(a, { ...a, optim: { ...a.optim, lr: 1e-5 } })).toThrow(/differs .* in optim/);
  });
});

describe('PairUG loading', () => {
  it('loads and resolves image paths', () => {
    const f = writeTinyPairUG(join(dir, 'ok'), 5);
    const pairs = loadPairUG(f);
    expect(pairs).toHaveLength(5);
    expect(existsSync(pairs[0].u_image_abs)).toBe(true);
    expect(pairs[1].type).toBe('retrieved');
  });
  it('a missing image names the file, the row and the field', () => {
    const f = writeTinyPairUG(join(dir, 'missing'), 4);
    unlinkSync(join(dir, 'missing', 'images', '2.png'));
    try {
      loadPairUG(f);
      throw new Error('expected a DataError');
    } catch (e) {
      expect(e).toBeInstanceOf(DataError);
      expect((e as DataError).file).toBe(f);
      expect((e as DataError).row).toBe(3);
      expect((e as Error).message).toMatch(/u_image 'images\/2\.png' does not exist/);
    }
  });
  it('schema violations, bad JSON and empty files are DataErrors with the row', () => {
    const f = join(dir, 'b', 'bad.jsonl');
    const good = readFileSync(writeTinyPairUG(join(dir, 'b'), 1), 'utf8').trim();
    const bad = { ...JSON.parse(good), pair_id: 'other', answer: 'Z' };
    writeFileSync(f, `${good}\n${JSON.stringify(bad)}\n`);
    expect(() => loadPairUG(f)).toThrow(/row 2: answer 'Z' but only 4 choices/);
    writeFileSync(f, `${good}\n${good}\n`);
    expect(() => loadPairUG(f)).toThrow(/row 2: duplicate pair_id 'p0'/);
    writeFileSync(f, `${good}\n{"pair_id": 1}\n`);
    expect(() => loadPairUG(f)).toThrow(/row 2: pair_id/);
    writeFileSync(f, `${good}\nnot json\n`);
    expect(() => loadPairUG(f)).toThrow(/:2: not valid JSON/);
    writeFileSync(f, '\n');
    expect(() => loadPairUG(f)).toThrow(/has no rows/);
    expect(() => loadPairUG(join(dir, 'nope.jsonl'))).toThrow(DataError);
  });
});

describe('data order and seeds', () => {
  it('every epoch is a permutation; the order depends only on (seed, step)', () => {
    const n = 7;
    const seen: number[] = [];
    for (let s = 0; s < 7; s++) seen.push(...stepIndices(n, 2, s, 3).indices); // 14 = two epochs
    expect([...seen.slice(0, 7)].sort()).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect([...seen.slice(7, 14)].sort()).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(stepIndices(n, 2, 5, 3)).toEqual(stepIndices(n, 2, 5, 3));
    expect(stepIndices(n, 2, 5, 3).indices).not.toEqual(stepIndices(n, 2, 5, 4).indices);
    expect(stepIndices(n, 2, 1, 3, 1).indices).not.toEqual(stepIndices(n, 2, 1, 3, 0).indices); // vanilla's gen stream
  });
  it('step seeds differ per side, step and inner iteration', () => {
    const s = new Set([
      stepSeed(0, 0, 'und'),
      stepSeed(0, 0, 'gen'),
      stepSeed(0, 1, 'und'),
      stepSeed(0, 0, 0),
      stepSeed(0, 0, 1),
      stepSeed(1, 0, 'und'),
    ]);
    expect(s.size).toBe(6);
    expect(stepSeed(12345, 1199, 'gen')).toBeLessThan(2 ** 31);
  });
});

describe("docs/training.md's table of config keys", () => {
  /** Dotted names of the schema's fields (records such as `options` are one field). */
  const leaves = (schema: unknown, prefix = ''): string[] => {
    let s = schema as { def?: { innerType?: unknown; type?: string }; shape?: Record<string, unknown> };
    while (s.def?.innerType) s = s.def.innerType as typeof s;
    if (s.def?.type !== 'object') return [prefix.slice(0, -1)];
    return Object.entries(s.shape!).flatMap(([k, v]) => leaves(v, `${prefix}${k}.`));
  };
  const get = (o: unknown, key: string) =>
    key.split('.').reduce<unknown>((x, k) => (x as Record<string, unknown> | undefined)?.[k], o);

  it('lists every key of TrainConfig once, with its default', () => {
    const doc = readFileSync(join(process.cwd(), 'docs', 'training.md'), 'utf8');
    const start = doc.indexOf('\n## Config keys');
    expect(start).toBeGreaterThan(-1);
    const training = doc.slice(start, doc.indexOf('\n## ', start + 1) >>> 0);
    const rows = [...training.matchAll(/^\| `([\w.]+)` \| ([^|]+?) \| .*\|$/gm)].map((m) => ({
      key: m[1],
      cell: m[2],
    }));
    expect(rows.map((r) => r.key).sort()).toEqual(leaves(TrainConfig).sort());
    const required = { data: 'd', out: 'o', model: { path: 'm' } };
    const defaults = TrainConfig.parse(required);
    for (const { key, cell } of rows) {
      if (cell === 'required') {
        expect(get(required, key), key).toBeDefined();
        const without = structuredClone(required) as Record<string, any>;
        if (key === 'model.path') delete without.model.path;
        else delete without[key];
        expect(TrainConfig.safeParse(without).success, key).toBe(false);
      } else if (cell === 'unset') {
        expect(get(defaults, key), key).toBeUndefined();
      } else if (cell.startsWith('`')) {
        expect(get(defaults, key), key).toEqual(JSON.parse(cell.slice(1, -1)));
      } else {
        expect(typeof get(defaults, key), key).toBe('string'); // described in words (a long text default)
      }
    }
  });
});

describe('checkpoint directory', () => {
  it('a failing policy save leaves no partial checkpoint and keeps the previous one', async () => {
    const out = join(dir, 'run');
    const cfg = parseTrainConfig({ data: 'd', out, model: { path: 'm' } });
    const fakePolicy = async (d: string) => {
      const { mkdirSync } = await import('node:fs');
      mkdirSync(d);
      writeFileSync(join(d, 'policy.json'), '{}');
    };
    await writeCheckpoint(out, { step: 1, config: cfg, restarts: 0 }, fakePolicy, 2);
    await expect(
      writeCheckpoint(
        out,
        { step: 2, config: cfg, restarts: 0 },
        async () => {
          throw new Error('disk full');
        },
        2,
      ),
    ).rejects.toThrow('disk full');
    expect(latestCheckpoint(out)?.state.step).toBe(1);
    const { readdirSync } = await import('node:fs');
    expect(readdirSync(join(out, 'checkpoints')).sort()).toEqual(['latest', 'step-000001']);
    await writeCheckpoint(out, { step: 2, config: cfg, restarts: 0 }, fakePolicy, 2);
    await writeCheckpoint(out, { step: 3, config: cfg, restarts: 0 }, fakePolicy, 2);
    expect(readdirSync(join(out, 'checkpoints')).sort()).toEqual(['latest', 'step-000002', 'step-000003']);
    expect(latestCheckpoint(out)?.state.step).toBe(3);
  });
});
