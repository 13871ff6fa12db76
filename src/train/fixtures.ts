/**
 * Tiny, self-made training inputs for examples, tests and benches: a PairUG file of coloured-square
 * pairs (PNG images written here) and a tiny random-init Janus model directory built by the sidecar.
 */
import { pairWeight } from '../grpo/advantages.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import type { PairRecord } from '../data/schemas.js';
import { Rng } from '../util/prng.js';
import type { Sidecar } from '../sidecar/index.js';

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  Buffer.from(data).copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** Encodes an RGB8 image (row-major, 3 bytes per pixel) as PNG. */
export function encodePng(width: number, height: number, rgb: Uint8Array): Buffer {
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (width * 3 + 1)] = 0;
    Buffer.from(rgb.buffer, rgb.byteOffset + y * width * 3, width * 3).copy(raw, y * (width * 3 + 1) + 1);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', new Uint8Array()),
  ]);
}

const COLORS: Array<[string, [number, number, number]]> = [
  ['red', [220, 30, 30]],
  ['green', [30, 200, 60]],
  ['blue', [40, 60, 220]],
  ['yellow', [230, 220, 40]],
];

/**
 * Writes `<dir>/pairs.jsonl` with `n` pairs (every other one retrieved, s_p in [0.6, 0.95]) and their
 * 32×32 PNG images; returns the file path.
 */
export function writeTinyPairUG(dir: string, n = 8, seed = 0): string {
  mkdirSync(join(dir, 'images'), { recursive: true });
  const rng = new Rng(seed);
  const rows: PairRecord[] = [];
  for (let i = 0; i < n; i++) {
    const c = rng.int(COLORS.length);
    const [name, rgbv] = COLORS[c];
    const px = new Uint8Array(32 * 32 * 3).fill(245);
    const x0 = 4 + rng.int(12);
    const y0 = 4 + rng.int(12);
    for (let y = y0; y < y0 + 14; y++) for (let x = x0; x < x0 + 14; x++) px.set(rgbv, (y * 32 + x) * 3);
    const img = `images/${i}.png`;
    writeFileSync(join(dir, img), encodePng(32, 32, px));
    const retrieved = i % 2 === 1;
    const sP = retrieved ? 0.6 + 0.35 * rng.next() : 1;
    rows.push({
      pair_id: `p${i}`,
      type: retrieved ? 'retrieved' : 'aligned',
      s_p: sP,
      w_p: pairWeight('pairgrpo', retrieved ? 'retrieved' : 'aligned', sP),
      u_src: 'U',
      u_id: `u${i}`,
      g_src: retrieved ? 'G' : 'U',
      g_id: retrieved ? `g${i}` : `u${i}`,
      u_image: img,
      question: 'What colour is the square?',
      choices: COLORS.map(([nm]) => nm),
      answer: String.fromCharCode(65 + c),
      g_image: img,
      prompt: `a ${name} square on a white background`,
    });
  }
  const file = join(dir, 'pairs.jsonl');
  writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

/**
 * Builds a tiny random-init model directory of a registered family with the sidecar (`models.tiny`):
 * a few layers and small vocabularies in the family's own on-disk layout, so `model.path` loads it
 * like the real checkpoint. Returns the directory.
 */
export async function buildTinyModel(sc: Sidecar, family: string, dir: string, seed = 0): Promise<string> {
  return (await sc.models.tiny({ family, dir, seed })).args.dir;
}

/** Builds a tiny random-init Janus model directory (HF `save_pretrained` layout) with the sidecar. */
export async function buildTinyJanus(sc: Sidecar, dir: string, seed = 0): Promise<string> {
  return buildTinyModel(sc, 'janus', dir, seed);
}

/** Builds a tiny random-init Lumina-DiMOO directory (DiMOO's token conventions: MASK, image codes, row separators). */
export async function buildTinyDimoo(sc: Sidecar, dir: string, seed = 0): Promise<string> {
  return buildTinyModel(sc, 'dimoo', dir, seed);
}

/** Builds a tiny random-init Bagel directory (BAGEL-7B-MoT layout) with the sidecar. */
export async function buildTinyBagel(sc: Sidecar, dir: string, seed = 0): Promise<string> {
  return buildTinyModel(sc, 'bagel', dir, seed);
}
