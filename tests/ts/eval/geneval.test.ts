/**
 * `pairuni samples` / writeGenEvalSamples: images of the shipped tiny Janus in GenEval's folder layout
 * (evaluation/evaluate_images.py reads `<out>/<digits>/metadata.jsonl` and `samples/<digits>.png`),
 * resumed without redoing finished prompts, bad prompt lines named, a model that cannot generate refused.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_MODEL } from '../../../src/demo/demo.js';
import { AbortedError, CapabilityError, DataError } from '../../../src/errors.js';
import { readGenEvalPrompts, writeGenEvalSamples } from '../../../src/eval/geneval.js';
import { Sidecar } from '../../../src/sidecar/index.js';
import { pairuni } from '../cli/_pairuni.js';

const dir = mkdtempSync(join(tmpdir(), 'pairuni-geneval-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Lines in GenEval's evaluation_metadata.jsonl form (tag, include/exclude clauses, prompt).
const LINES = [
  { tag: 'single_object', include: [{ class: 'bench', count: 1 }], prompt: 'a photo of a bench' },
  { tag: 'colors', include: [{ class: 'cat', count: 1, color: 'red' }], prompt: 'a photo of a red cat' },
  {
    tag: 'counting',
    include: [{ class: 'clock', count: 2 }],
    exclude: [{ class: 'clock', count: 3 }],
    prompt: 'a photo of two clocks',
  },
];
const promptsFile = join(dir, 'evaluation_metadata.jsonl');
writeFileSync(promptsFile, `${LINES.map((l) => JSON.stringify(l)).join('\n')}\n`);
const SIZE = (JSON.parse(readFileSync(join(DEFAULT_MODEL, 'pairuni_model.json'), 'utf8')) as { image_size: number })
  .image_size;

/** Width, height, bit depth and colour type from the IHDR, and the inflated scanlines' length. */
function readPng(path: string): { width: number; height: number; depth: number; color: number; raw: number } {
  const b = readFileSync(path);
  expect([...b.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  expect(b.toString('ascii', 12, 16)).toBe('IHDR');
  const idat: Buffer[] = [];
  for (let at = 8; at < b.length;) {
    const len = b.readUInt32BE(at);
    if (b.toString('ascii', at + 4, at + 8) === 'IDAT') idat.push(b.subarray(at + 8, at + 8 + len));
    at += 12 + len;
  }
  return {
    width: b.readUInt32BE(16),
    height: b.readUInt32BE(20),
    depth: b[24],
    color: b[25],
    raw: inflateSync(Buffer.concat(idat)).length,
  };
}

const tree = (out: string) =>
  readdirSync(out, { recursive: true, encoding: 'utf8' })
    .map((p) => p.split('\\').join('/'))
    .sort();
const snapshot = (out: string) =>
  Object.fromEntries(
    tree(out)
      .filter((p) => p.endsWith('.png'))
      .map((p) => [p, readFileSync(join(out, p)).toString('base64')]),
  );

describe('prompts file validation (before any model loads)', () => {
  const bad = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  it('a bad line is a DataError naming the file and the line number', () => {
    const ok = JSON.stringify(LINES[0]);
    const cases: Array<[string, RegExp]> = [
      [`${ok}\n\n{"tag": "colors", "prompt": "x"\n`, /:3: not valid JSON/],
      [`${ok}\n{"prompt": "a cat"}\n`, /:2: "tag" must be a non-empty string, got nothing/],
      [`${ok}\n${ok}\n["a cat"]\n`, /:3: must be a JSON object/],
      [`{"tag": "colors", "prompt": ""}\n`, /:1: "prompt" must be a non-empty string, got ""/],
    ];
    cases.forEach(([text, want], i) => {
      const p = bad(`bad${i}.jsonl`, text);
      let err: unknown;
      try {
        readGenEvalPrompts(p);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(DataError);
      expect((err as DataError).message).toMatch(want);
      expect((err as DataError).file).toBe(p);
    });
    // Blank lines are skipped: indices count prompts, line numbers count lines.
    const p = bad('blank.jsonl', `\n${ok}\n\n${JSON.stringify(LINES[1])}\n`);
    expect(readGenEvalPrompts(p).map((x) => [x.index, x.line, x.tag])).toEqual([
      [0, 2, 'single_object'],
      [1, 4, 'colors'],
    ]);
  });

  it('pairuni samples: the bad line named in one line, exit 1; a missing flag, exit 2', async () => {
    const p = bad('cli-bad.jsonl', `${JSON.stringify(LINES[0])}\nnot json\n`);
    const r = await pairuni(['samples', '--model', DEFAULT_MODEL, '--prompts', p, '--out', join(dir, 'never')], {
      stderrWrites: true,
    });
    expect(r.code).toBe(1);
    expect(r.err).toHaveLength(1);
    expect(r.err[0]).toMatch(/^pairuni samples: DataError \[data\]: .*cli-bad\.jsonl:2: not valid JSON/);
    expect(() => statSync(join(dir, 'never'))).toThrow();
    const m = await pairuni(['samples', '--model', DEFAULT_MODEL]);
    expect(m).toMatchObject({
      code: 2,
      err: ["pairuni samples: --prompts, --out are required (see 'pairuni samples --help')"],
    });
  });
});

describe('GenEval layout from the tiny Janus', () => {
  const cliOut = join(dir, 'cli');
  let first: Record<string, string>;

  it('pairuni samples writes <index:05d>/metadata.jsonl and samples/<k:05d>.png, PNGs of the model size', async () => {
    const r = await pairuni([
      'samples',
      '--model',
      DEFAULT_MODEL,
      '--prompts',
      promptsFile,
      '--out',
      cliOut,
      '--n-samples',
      '2',
      '--threads',
      '1',
      '--quiet',
    ]);
    expect(r.err).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.out).toEqual([`pairuni samples: 3 prompts written; 2 images of ${SIZE}×${SIZE} per prompt in ${cliOut}`]);
    expect(tree(cliOut)).toEqual(
      ['00000', '00001', '00002']
        .flatMap((f) => [f, `${f}/metadata.jsonl`, `${f}/samples`, `${f}/samples/00000.png`, `${f}/samples/00001.png`])
        .sort(),
    );
    LINES.forEach((l, i) => {
      const meta = readFileSync(join(cliOut, `0000${i}`, 'metadata.jsonl'), 'utf8');
      expect(meta).toBe(`${JSON.stringify(l)}\n`); // the line as given; the evaluator json.load()s the file
      expect(JSON.parse(meta)).toEqual(l);
    });
    for (const p of tree(cliOut).filter((x) => x.endsWith('.png'))) {
      expect(readPng(join(cliOut, p))).toEqual({
        width: SIZE,
        height: SIZE,
        depth: 8,
        color: 2,
        raw: (SIZE * 3 + 1) * SIZE,
      });
    }
    first = snapshot(cliOut);
    // Not all alike: the two samples of a prompt differ, and so do prompts.
    expect(new Set(Object.values(first)).size).toBe(6);
  });

  describe('resuming (one sidecar for the SDK calls)', () => {
    let sc: Sidecar;
    beforeAll(async () => {
      sc = await Sidecar.spawn({ threads: 1 });
    });
    afterAll(async () => {
      await sc?.close();
    });
    const opts = (out: string) => ({ model: DEFAULT_MODEL, prompts: promptsFile, out, samples: 2, sidecar: sc });

    it('interrupted after the first prompt, then rerun: the rest written, the first kept, the same images as one uninterrupted run', async () => {
      const out = join(dir, 'sdk');
      const ac = new AbortController();
      const seen: number[] = [];
      const stop = writeGenEvalSamples({
        ...opts(out),
        signal: ac.signal,
        onProgress: (done) => (seen.push(done), done === 1 && ac.abort()),
      });
      await expect(stop).rejects.toBeInstanceOf(AbortedError);
      await expect(stop).rejects.toThrow('stopped after 1/3 prompts; the same command resumes');
      expect(seen).toEqual([0, 1]);
      expect(tree(out)).toEqual([
        '00000',
        '00000/metadata.jsonl',
        '00000/samples',
        '00000/samples/00000.png',
        '00000/samples/00001.png',
      ]);
      const kept = statSync(join(out, '00000', 'samples', '00000.png')).mtimeMs;

      const res = await writeGenEvalSamples(opts(out));
      expect(res).toMatchObject({ written: [1, 2], kept: [0], samples: 2, width: SIZE, height: SIZE, family: 'janus' });
      expect(statSync(join(out, '00000', 'samples', '00000.png')).mtimeMs).toBe(kept);
      expect(snapshot(out)).toEqual(first);
    });

    it('a deleted prompt folder is written again, the others are not touched; a complete directory writes nothing', async () => {
      const out = join(dir, 'sdk');
      const before = Object.fromEntries(
        ['00000', '00002'].map((f) => [f, statSync(join(out, f, 'samples', '00001.png')).mtimeMs]),
      );
      rmSync(join(out, '00001'), { recursive: true });
      const res = await writeGenEvalSamples(opts(out));
      expect(res).toMatchObject({ written: [1], kept: [0, 2] });
      for (const f of ['00000', '00002'])
        expect(statSync(join(out, f, 'samples', '00001.png')).mtimeMs).toBe(before[f]);
      expect(snapshot(out)).toEqual(first);
      expect(await writeGenEvalSamples(opts(out))).toMatchObject({
        written: [],
        kept: [0, 1, 2],
        width: SIZE,
        height: SIZE,
      });
    });

    it('Bagel writes the same layout through its flow sampler (a tiny Bagel at its own image size)', async () => {
      const bagel = join(dir, 'tiny-bagel');
      await sc.models.tiny({ family: 'bagel', dir: bagel, seed: 0 });
      const out = join(dir, 'bagel-out');
      const small = { vae_image_size: 32, vit_image_size: 28 };
      const r = await writeGenEvalSamples({ ...opts(out), model: bagel, family: 'bagel', modelOptions: small });
      expect(r).toMatchObject({ written: [0, 1, 2], kept: [], width: 32, height: 32, family: 'bagel' });
      for (const f of ['00000', '00001', '00002']) {
        expect(readPng(join(out, f, 'samples', '00001.png'))).toEqual({
          width: 32,
          height: 32,
          depth: 8,
          color: 2,
          raw: (32 * 3 + 1) * 32,
        });
      }
      // Bagel's default 512 px is beyond this tiny model's latent grid: refused by name before sampling.
      const err = await writeGenEvalSamples({
        ...opts(join(dir, 'bagel-512')),
        model: bagel,
        family: 'bagel',
        sidecar: sc,
      }).catch((e: unknown) => e);
      expect((err as Error).message).toMatch(/vae_image_size=512 is beyond this model's largest image, 128 px/);
    });

    it('a model whose adapter cannot generate is refused with a CapabilityError naming gen_rollout', async () => {
      // Every built-in family generates now; a plug-in adapter that declares only `sft` stands in for one that cannot.
      const plug = join(dir, 'plug');
      mkdirSync(plug, { recursive: true });
      writeFileSync(
        join(plug, 'sft_only_adapter.py'),
        [
          'from pairuni_sidecar.adapters.janus import JanusAdapter',
          '',
          'class SftOnly(JanusAdapter):',
          '    name = "sft_only"',
          '    capabilities = frozenset({"sft"})',
          '',
          'PLUGINS = {"adapter": {"sft_only": "sft_only_adapter:SftOnly"}}',
          '',
        ].join('\n'),
      );
      const own = await Sidecar.spawn({ threads: 1, plugins: ['sft_only_adapter'], env: { PYTHONPATH: plug } });
      try {
        const out = join(dir, 'sft-only-out');
        const err = await writeGenEvalSamples({ ...opts(out), family: 'sft_only', sidecar: own }).catch(
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(CapabilityError);
        expect(err).toMatchObject({ capability: 'gen_rollout', capabilities: ['sft'] });
        expect((err as Error).message).toMatch(
          /family sft_only\) cannot generate images: its adapter declares \[sft\], without 'gen_rollout'/,
        );
        expect(() => statSync(out)).toThrow();
      } finally {
        await own.close();
      }
    });
  });
});
