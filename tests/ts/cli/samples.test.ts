/**
 * `pairuni samples`: a tiny Janus's images for GenEval prompts in the layout GenEval's evaluator reads
 * (<i:05d>/metadata.jsonl + <i:05d>/samples/<k:04d>.png); a rerun leaves complete prompts as they are.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sidecar } from '../../../src/sidecar/index.js';
import { buildTinyJanus } from '../../../src/train/fixtures.js';
import { pairuni } from './_pairuni.js';

let dir: string;
let model: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pairuni-samples-'));
  const sc = await Sidecar.spawn({ threads: 1 });
  try {
    model = await buildTinyJanus(sc, join(dir, 'tiny'));
  } finally {
    await sc.close();
  }
}, 900_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('pairuni samples', () => {
  it('writes GenEval folders: each prompt\'s metadata line and its n PNGs; a rerun keeps them', async () => {
    const lines = [
      '{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}',
      '{"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"}',
    ];
    const prompts = join(dir, 'evaluation_metadata.jsonl');
    writeFileSync(prompts, `${lines.join('\n')}\n`);
    const out = join(dir, 'geneval');
    const args = ['samples', '--model', model, '--prompts', prompts, '--out', out, '--n', '2', '--device', 'cpu', '--threads', '1', '--quiet'];
    const r = await pairuni(args);
    expect(r.code).toBe(0);
    expect(r.out).toEqual([`4 images written for 2 prompts (2 each) in ${out}`]);
    for (const [i, line] of lines.entries()) {
      const d = join(out, String(i).padStart(5, '0'));
      expect(readFileSync(join(d, 'metadata.jsonl'), 'utf8')).toBe(`${line}\n`);
      for (const k of [0, 1]) {
        const png = readFileSync(join(d, 'samples', `000${k}.png`));
        expect(png.subarray(1, 4).toString('ascii')).toBe('PNG');
        expect(png.readUInt32BE(16)).toBeGreaterThan(0); // width
      }
      expect(existsSync(join(d, 'samples', '0002.png'))).toBe(false);
    }
    const before = statSync(join(out, '00001', 'samples', '0001.png')).mtimeMs;
    const again = await pairuni(args);
    expect(again.out).toEqual([`0 images written for 2 prompts (2 each) in ${out}`]);
    expect(statSync(join(out, '00001', 'samples', '0001.png')).mtimeMs).toBe(before);
  }, 900_000);

  it('a metadata line without a prompt is a DataError naming the line, before a sidecar starts', async () => {
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, '{"prompt": "ok"}\n{"tag": "x"}\n');
    const r = await pairuni(['samples', '--model', model, '--prompts', bad, '--out', join(dir, 'o')]);
    expect(r.code).not.toBe(0);
    expect(r.err.join('\n')).toContain(`${bad}:2: no "prompt" string`);
    expect(existsSync(join(dir, 'o'))).toBe(false);
  });
});
