/** Tiny synthetic U/G manifests with real PNG files, for the pipeline and CLI tests. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { afterAll } from 'vitest';

// Every directory tinySet makes is removed when the importing test file finishes (the run fails on
// anything left in its TMPDIR).
const made: string[] = [];
afterAll(() => {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
});

const CRC = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

export function png(w: number, h: number, pixel: (x: number, y: number) => number[]): Buffer {
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw.set(pixel(x, y), y * (w * 3 + 1) + 1 + x * 3);
  const crc = (b: Buffer) => {
    let c = 0xffffffff;
    for (const x of b) c = CRC[(c ^ x) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const t = Buffer.concat([Buffer.from(type), data]);
    const b = Buffer.alloc(8 + data.length + 4);
    b.writeUInt32BE(data.length, 0);
    t.copy(b, 4);
    b.writeUInt32BE(crc(t), 8 + data.length);
    return b;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

const COLORS = [
  [230, 30, 30],
  [30, 220, 40],
  [30, 40, 230],
  [230, 220, 30],
];

/** Image of topic t with deterministic per-item noise. */
export function topicImage(t: number, salt: number): Buffer {
  let s = salt * 7919 + 17;
  const rnd = () => ((s = (s * 48271) % 2147483647) / 2147483647 - 0.5) * 50;
  const c = COLORS[t % COLORS.length];
  return png(16, 16, (x, y) =>
    ((x + 2 * y) % (3 + t) === 0 ? [20, 20, 20] : c).map((v) => Math.max(0, Math.min(255, Math.round(v + rnd())))),
  );
}

export interface TinySet {
  dir: string;
  u: string;
  g: string;
  nU: number;
  nG: number;
}

/** nU understanding + nG generation items over 4 colour topics; G items without QA when `gQA` is false. */
export function tinySet(nU = 24, nG = 30, opts: { gQA?: boolean; uCaption?: boolean } = {}): TinySet {
  const dir = mkdtempSync(join(tmpdir(), 'pairuni-pairing-'));
  made.push(dir);
  mkdirSync(join(dir, 'img'));
  const u = Array.from({ length: nU }, (_, i) => {
    writeFileSync(join(dir, 'img', `u${i}.png`), topicImage(i % 4, i));
    const r: Record<string, unknown> = {
      id: `u${i}`,
      image: `img/u${i}.png`,
      question: `Q${i}?`,
      choices: ['yes', 'no'],
      answer: 'A',
      category: `c${i % 4}`,
    };
    if (opts.uCaption !== false) r.caption = `caption ${i}`;
    return r;
  });
  const g = Array.from({ length: nG }, (_, i) => {
    writeFileSync(join(dir, 'img', `g${i}.png`), topicImage((i * 3) % 4, 1000 + i));
    const r: Record<string, unknown> = { id: `g${i}`, image: `img/g${i}.png`, prompt: `prompt ${i}` };
    if (opts.gQA !== false) Object.assign(r, { question: `GQ${i}?`, choices: ['a', 'b', 'c'], answer: 'B' });
    return r;
  });
  writeFileSync(join(dir, 'u.jsonl'), u.map((r) => JSON.stringify(r)).join('\n') + '\n');
  writeFileSync(join(dir, 'g.jsonl'), g.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return { dir, u: join(dir, 'u.jsonl'), g: join(dir, 'g.jsonl'), nU, nG };
}
