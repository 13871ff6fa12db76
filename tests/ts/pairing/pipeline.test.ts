/**
 * The sidecar-backed pipeline: feature embedding with the on-disk cache (second run embeds 0,
 * an interrupted run resumes), PairUG output files, stats, ablation sets and the CLI commands.
 */
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tableFromIPC } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run as runEmbed } from '../../../src/cli/commands/embed.js';
import { run as runPair } from '../../../src/cli/commands/pair.js';
import { readUnderstanding } from '../../../src/data/manifest.js';
import { PairRecord } from '../../../src/data/schemas.js';
import { AbortedError, ConfigError, DataError, SidecarError } from '../../../src/errors.js';
import { embedImages } from '../../../src/pairing/embed.js';
import { buildPairUG, embedManifests } from '../../../src/pairing/pipeline.js';
import { Sidecar } from '../../../src/sidecar/index.js';
import { tinySet } from './_data.js';

let sc: Sidecar;
beforeAll(async () => {
  sc = await Sidecar.spawn();
});
afterAll(async () => {
  await sc?.close();
});

const pixels = { kind: 'pixels' as const, size: 8 };

describe('feature cache', () => {
  it('second run embeds nothing; identical images are embedded once', async () => {
    const s = tinySet(12, 10);
    const cacheDir = join(s.dir, 'cache');
    const first = await embedManifests({
      understanding: s.u,
      generation: s.g,
      backbone: pixels,
      cacheDir,
      sidecar: sc,
    });
    expect(first.embedded).toBe(22);
    expect(first.cached).toBe(0);
    expect(first.fu.rows).toBe(12);
    expect(first.dim).toBe(192);
    const second = await embedManifests({
      understanding: s.u,
      generation: s.g,
      backbone: pixels,
      cacheDir,
      sidecar: sc,
    });
    expect(second.embedded).toBe(0);
    expect(second.cached).toBe(22);
    expect(Array.from(second.fu.data)).toEqual(Array.from(first.fu.data));
    expect(Array.from(second.fg.data)).toEqual(Array.from(first.fg.data));
    // A different backbone configuration has its own key: everything is embedded again.
    const other = await embedManifests({
      understanding: s.u,
      generation: s.g,
      backbone: { kind: 'pixels', size: 4 },
      cacheDir,
      sidecar: sc,
    });
    expect(other.embedded).toBe(22);
    const dup = await embedImages(
      [
        { path: join(s.dir, 'img', 'u0.png') },
        { path: join(s.dir, 'img', 'u0.png') },
        { path: join(s.dir, 'img', 'u1.png') },
      ],
      { sidecar: sc, backbone: { kind: 'pixels', size: 5 }, cacheDir },
    );
    expect(dup).toMatchObject({ embedded: 2, duplicates: 1, cached: 0 });
  });

  it('an interrupted run keeps finished batches and the rerun embeds only the rest', async () => {
    const s = tinySet(20, 1);
    const u = await readUnderstanding(s.u);
    const images = u.items.map((i) => i.image);
    const cacheDir = join(s.dir, 'cache');
    const ac = new AbortController();
    const err = await embedImages(images, {
      sidecar: sc,
      backbone: pixels,
      cacheDir,
      batchSize: 4,
      flushEvery: 4,
      signal: ac.signal,
      onProgress: (done) => {
        if (done >= 8) ac.abort();
      },
    }).catch((e) => e);
    expect(err).toBeInstanceOf(AbortedError);
    const resumed = await embedImages(images, { sidecar: sc, backbone: pixels, cacheDir, batchSize: 4 });
    expect(resumed.cached).toBe(8);
    expect(resumed.embedded).toBe(12);
  });

  it('no weights → typed error that says so; undecodable image → DataError with file and row', async () => {
    const s = tinySet(2, 2);
    const e = await embedManifests({
      understanding: s.u,
      generation: s.g,
      backbone: { kind: 'resnet50' },
      cacheDir: join(s.dir, 'c'),
      sidecar: sc,
    }).catch((x) => x);
    expect(e).toBeInstanceOf(SidecarError);
    expect(e.code).toBe('not_found');
    expect(e.message).toMatch(/needs local weights.*never falls back to random weights/);
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(s.dir, 'img', 'g1.png'), 'not a png');
    const d = await embedManifests({
      understanding: s.u,
      generation: s.g,
      backbone: pixels,
      cacheDir: join(s.dir, 'c'),
      sidecar: sc,
    }).catch((x) => x);
    expect(d).toBeInstanceOf(DataError);
    expect(d.message).toMatch(/g\.jsonl row 2: image of 'g1'.*cannot decode/);
    expect(d.row).toBe(2);
  });
});

describe('buildPairUG', () => {
  it('writes Arrow + JSONL PairRecords and a stats report; aligned w=1, retrieved w=√s', async () => {
    const s = tinySet(24, 30);
    const out = join(s.dir, 'out');
    const r = await buildPairUG({
      understanding: s.u,
      generation: s.g,
      out,
      backbone: pixels,
      cacheDir: join(s.dir, 'cache'),
      sidecar: sc,
      config: { kmeans: { k: 4, batchSize: 16 }, threshold: 0.5, topN: 5 },
    });
    const lines = readFileSync(r.files.jsonl, 'utf8')
      .trim()
      .split('\n')
      .map((l) => PairRecord.parse(JSON.parse(l)));
    expect(lines.length).toBe(r.records.length);
    const t = tableFromIPC(readFileSync(r.files.arrow));
    expect(t.numRows).toBe(lines.length);
    expect(t.getChild('pair_id')!.get(0)).toBe(lines[0].pair_id);
    expect(Array.from(t.getChild('choices')!.get(0))).toEqual(lines[0].choices);
    const aligned = lines.filter((l) => l.type === 'aligned');
    const retrieved = lines.filter((l) => l.type === 'retrieved');
    expect(aligned.length).toBe(r.stats.clusters.nonEmpty);
    expect(aligned.length).toBeGreaterThan(0);
    expect(retrieved.length).toBeGreaterThan(0);
    for (const a of aligned) {
      expect(a).toMatchObject({ s_p: 1, w_p: 1, u_id: a.g_id, u_src: a.g_src, u_image: a.g_image });
      if (a.u_src === 'U')
        expect(a.prompt).toMatch(/^caption /); // U medoid: its caption is the prompt
      else expect(a.question).toMatch(/^GQ/); // G medoid: its completed question
    }
    for (const p of retrieved) {
      expect(p.u_src).toBe('U');
      expect(p.g_src).toBe('G');
      expect(p.s_p).toBeGreaterThanOrEqual(0.5);
      expect(p.w_p).toBeCloseTo(Math.sqrt(p.s_p), 12);
      expect(existsSync(join(out, p.u_image))).toBe(true);
    }
    const stats = JSON.parse(readFileSync(r.files.stats, 'utf8'));
    expect(stats.counts).toMatchObject({ total: lines.length, aligned: aligned.length, retrieved: retrieved.length });
    expect(stats.similarity.bins.reduce((a: number, b: { count: number }) => a + b.count, 0)).toBe(retrieved.length);
    expect(stats.features.cached + stats.features.embedded).toBe(54);
    expect(r.summary).toMatch(/aligned .* retrieved/);
  });

  it('medoids lacking completed fields are reported and skipped', async () => {
    const s = tinySet(10, 30, { gQA: false });
    const r = await buildPairUG({
      understanding: s.u,
      generation: s.g,
      out: join(s.dir, 'o'),
      backbone: pixels,
      cacheDir: join(s.dir, 'c'),
      sidecar: sc,
      config: { kmeans: { k: 6, batchSize: 16 }, threshold: 0.5 },
    });
    expect(r.stats.skippedMedoids.count).toBeGreaterThan(0);
    expect(r.stats.skippedMedoids.examples[0].reason).toMatch(/no question\/choices\/answer/);
    expect(r.records.every((x) => x.type === 'retrieved' || x.u_src === 'U')).toBe(true);
    expect(r.stats.counts.aligned + r.stats.skippedMedoids.count).toBe(r.stats.clusters.nonEmpty);
  });

  it('ablation sets follow their definitions', async () => {
    const s = tinySet(24, 30);
    const base = { understanding: s.u, generation: s.g, backbone: pixels, cacheDir: join(s.dir, 'c'), sidecar: sc };
    const cfg = { kmeans: { k: 4, batchSize: 16 }, threshold: 0.5, topN: 5 };
    const run = (ablation: string) =>
      buildPairUG({ ...base, out: join(s.dir, ablation), config: { ...cfg, ablation: ablation as never } });
    const full = await run('none');
    const B = full.records.length;
    const nA = full.stats.counts.aligned;
    expect((await run('aligned-only')).records).toEqual(full.records.filter((r) => r.type === 'aligned'));
    expect((await run('retrieval-only')).records).toEqual(full.records.filter((r) => r.type === 'retrieved'));
    const rnd = (await run('random')).records;
    expect(rnd.length).toBe(Math.min(B, 24, 30));
    expect(new Set(rnd.map((r) => r.u_id)).size).toBe(rnd.length);
    expect(new Set(rnd.map((r) => r.g_id)).size).toBe(rnd.length);
    expect(rnd.every((r) => r.w_p === 1)).toBe(true); // the paper's naive-mixture baseline: unweighted
    expect(full.records.every((r) => r.w_p === (r.type === 'aligned' ? 1 : Math.sqrt(r.s_p)))).toBe(true);
    const uo = (await run('u-only')).records;
    expect(uo.length).toBe(Math.min(B, 24));
    expect(uo.every((r) => r.u_src === 'U' && r.g_src === 'U' && r.u_id === r.g_id)).toBe(true);
    const go = (await run('g-only')).records;
    expect(go.every((r) => r.u_src === 'G' && r.g_src === 'G')).toBe(true);
    const un = (await run('unpaired')).records;
    expect(un.length).toBe(B);
    const key = (r: PairRecord) => `${r.u_src}/${r.u_id}>${r.g_src}/${r.g_id}`;
    expect(new Set(un.map((r) => `${r.u_src}/${r.u_id}`))).toEqual(
      new Set(full.records.map((r) => `${r.u_src}/${r.u_id}`)),
    );
    expect(new Set(un.map((r) => `${r.g_src}/${r.g_id}`))).toEqual(
      new Set(full.records.map((r) => `${r.g_src}/${r.g_id}`)),
    );
    const orig = new Set(full.records.map(key));
    expect(un.filter((r) => orig.has(key(r))).length).toBe(0); // no pair keeps its partner
    expect(un.every((r) => r.w_p === 1)).toBe(true);
    const low = (await run('low-sim')).records;
    expect(low.length).toBeGreaterThan(0);
    expect(low.length).toBeLessThanOrEqual(B);
    const meanS = (rs: PairRecord[]) => rs.reduce((a, r) => a + r.s_p, 0) / rs.length;
    expect(meanS(low)).toBeLessThan(meanS(full.records.slice(nA)));
  });
});

describe('CLI', () => {
  it('pairuni embed then pairuni pair (pixels backbone) write the dataset; the rerun embeds nothing', async () => {
    const s = tinySet(12, 16);
    const cache = join(s.dir, 'cache');
    const logs: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => logs.push(a.join(' '));
    try {
      expect(
        await runEmbed([
          '--u',
          s.u,
          '--g',
          s.g,
          '--backbone',
          'pixels',
          '--size',
          '8',
          '--cache-dir',
          cache,
          '--quiet',
        ]),
      ).toBe(0);
      expect(logs.at(-1)).toMatch(/^embedded 28 images, 0 from cache/);
      const out = join(s.dir, 'pairug');
      expect(
        await runPair([
          '--u',
          s.u,
          '--g',
          s.g,
          '--out',
          out,
          '--backbone',
          'pixels',
          '--size',
          '8',
          '--cache-dir',
          cache,
          '--k',
          '3',
          '--threshold',
          '0.5',
          '--kmeans-batch',
          '16',
          '--quiet',
        ]),
      ).toBe(0);
      expect(readdirSync(out).sort()).toEqual(['pairs.arrow', 'pairs.jsonl', 'stats.json']);
      expect(JSON.parse(readFileSync(join(out, 'stats.json'), 'utf8')).features).toMatchObject({
        embedded: 0,
        cached: 28,
      });
    } finally {
      console.log = log;
      rmSync(s.dir, { recursive: true, force: true });
    }
    expect(await runPair(['--u', 'x'])).toBe(2); // a missing required flag: one line, usage exit
    await expect(runPair(['--u', 'a', '--g', 'b', '--out', 'c', '--ablation', 'bogus'])).rejects.toThrow(/ablation/);
  });
});
