/**
 * Build a tiny PairUG dataset end to end: synthetic images → `pixels` embedder (weight-free) →
 * Algorithm 1 (k-means medoids + exact greedy retrieval) → pairs.arrow / pairs.jsonl / stats.json.
 *
 *   npx tsx examples/pair.ts [outDir]
 *
 * For real data use the same call with your manifests and `backbone: { kind: 'resnet50', weights }`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { buildPairUG } from 'pairuni';

/** A minimal RGB PNG encoder, so the example needs no image library. */
function png(w: number, h: number, pixel: (x: number, y: number) => [number, number, number]): Buffer {
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) {
    raw[y * (w * 3 + 1)] = 0; // filter: none
    for (let x = 0; x < w; x++) raw.set(pixel(x, y), y * (w * 3 + 1) + 1 + x * 3);
  }
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer) => {
    let c = 0xffffffff;
    for (const x of b) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const t = Buffer.concat([Buffer.from(type), data]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(t));
    return Buffer.concat([len, t, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

const out = process.argv[2] ?? join(tmpdir(), 'pairuni-example-pair');
const data = join(out, 'data');
mkdirSync(join(data, 'img'), { recursive: true });

// Six "topics" (colour + stripe pattern); each U and G item is a noisy instance of one topic.
const topics: [number, number, number][] = [
  [220, 40, 40],
  [40, 200, 60],
  [50, 70, 230],
  [230, 210, 40],
  [180, 60, 200],
  [40, 200, 210],
];
let seed = 1;
const rand = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
const image = (name: string, t: number) => {
  const [r, g, b] = topics[t];
  const stripe = 3 + t;
  const jitter = () => Math.round((rand() - 0.5) * 60);
  // A random patch in another topic's colour makes items of one topic similar, not identical.
  const [pr, pg, pb] = topics[Math.floor(rand() * topics.length)];
  const px = Math.floor(rand() * 20);
  const py = Math.floor(rand() * 20);
  const pixel = (x: number, y: number): number[] =>
    x >= px && x < px + 14 && y >= py && y < py + 14
      ? [pr, pg, pb]
      : (x + y) % stripe < 2
        ? [255 - r, 255 - g, 255 - b]
        : [r, g, b];
  writeFileSync(
    join(data, 'img', name),
    png(32, 32, (x, y) => pixel(x, y).map((v) => Math.max(0, Math.min(255, v + jitter()))) as [number, number, number]),
  );
  return `img/${name}`;
};
const names = ['red', 'green', 'blue', 'yellow', 'purple', 'cyan'];
const U = Array.from({ length: 60 }, (_, i) => {
  const t = i % 6;
  return {
    id: `u${i}`,
    image: image(`u${i}.png`, t),
    question: 'Which colour dominates the image?',
    choices: [1, 2, 3, 0].map((k) => names[(t + k) % 6]),
    answer: 'D',
    caption: `A ${names[t]} striped square`,
    category: names[t],
  };
});
const G = Array.from({ length: 80 }, (_, i) => {
  const t = (i * 5) % 6;
  return {
    id: `g${i}`,
    image: image(`g${i}.png`, t),
    prompt: `A ${names[t]} square with diagonal stripes`,
    question: 'What colour is the square?',
    choices: [names[t], 'black'],
    answer: 'A',
    category: names[t],
  };
});
writeFileSync(join(data, 'u.jsonl'), U.map((r) => JSON.stringify(r)).join('\n') + '\n');
writeFileSync(join(data, 'g.jsonl'), G.map((r) => JSON.stringify(r)).join('\n') + '\n');

const result = await buildPairUG({
  understanding: join(data, 'u.jsonl'),
  generation: join(data, 'g.jsonl'),
  out: join(out, 'pairug'),
  backbone: { kind: 'pixels', size: 8 },
  cacheDir: join(out, 'cache'),
  config: { seed: 0, kmeans: { k: 6, batchSize: 32 }, topN: 5, threshold: 0.8 },
});
console.log(result.summary);
console.log(`first pair: ${JSON.stringify(result.records[0])}`);
console.log(`files: ${Object.values(result.files).join(', ')}`);
