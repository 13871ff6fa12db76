/**
 * GenEval's sample layout (`pairuni samples`): for prompt i of a GenEval metadata file,
 * `<out>/<i:05d>/metadata.jsonl` holds that prompt's metadata line as given and
 * `<out>/<i:05d>/samples/<k:04d>.png` its images, the folders GenEval's evaluator reads
 * (`evaluate_images.py <out>`). Images are drawn by the model directory's family adapter, seeded per
 * prompt, so a rerun writes the same images and an interrupted export continues where it stopped.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { familyOptions } from '../contract/families.js';
import { GenSampling } from '../contract/ops.js';
import { wireOf } from '../contract/wire.js';
import { DataError } from '../errors.js';
import type { Sidecar } from '../sidecar/index.js';
import { writeFileAtomic } from '../util/atomic.js';
import type { TrainConfig } from './config.js';
import { encodePng } from './fixtures.js';
import { loadArgs } from './trainer.js';

/** The lines of a GenEval metadata file (each a JSON object with a `prompt`), kept as written. */
export function readGenEvalPrompts(file: string): Array<{ line: string; prompt: string }> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new DataError(`cannot read prompts ${file}: ${(e as Error).message}`, file, undefined, { cause: e });
  }
  const out: Array<{ line: string; prompt: string }> = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch {
      throw new DataError(`${file}:${i + 1}: not a JSON object`, file, i + 1);
    }
    const prompt = (row as { prompt?: unknown } | null)?.prompt;
    if (typeof prompt !== 'string' || !prompt) throw new DataError(`${file}:${i + 1}: no "prompt" string`, file, i + 1);
    out.push({ line: line.trim(), prompt });
  });
  if (!out.length) throw new DataError(`${file} holds no prompts`, file);
  return out;
}

/**
 * Writes `n` images per prompt into GenEval's layout under `out`; a prompt whose folder is complete is
 * left as it is. `cfg` gives the model (`model`), the sampling (`gen`) and the seed. Returns the count written.
 */
export async function exportGenEvalSamples(
  sc: Sidecar,
  cfg: TrainConfig,
  prompts: ReadonlyArray<{ line: string; prompt: string }>,
  out: string,
  n: number,
  onPrompt?: (done: number, total: number) => void,
): Promise<{ prompts: number; images: number }> {
  await sc.train.load(loadArgs(cfg));
  let images = 0;
  for (const [i, p] of prompts.entries()) {
    const dir = join(out, String(i).padStart(5, '0'));
    const png = (k: number) => join(dir, 'samples', `${String(k).padStart(4, '0')}.png`);
    if (existsSync(join(dir, 'metadata.jsonl')) && Array.from({ length: n }, (_, k) => existsSync(png(k))).every(Boolean)) continue;
    const [g] = await sc.all('train.gen_rollout', () => ({
      n,
      items: [{ prompt: p.prompt }],
      sampling: { ...wireOf(GenSampling, cfg.gen), options: familyOptions(cfg.model.adapter, 'gen', cfg.gen.options), seed: (cfg.seed * 1_000_003 + i) % 2_147_483_647, est_seeds: [0] },
    }));
    try {
      const t = (await sc.train.rolloutImages({ handle: g.args.handle })).tensors.images;
      const [, h, w] = t.shape;
      mkdirSync(join(dir, 'samples'), { recursive: true });
      for (let k = 0; k < n; k++) writeFileAtomic(png(k), encodePng(w, h, t.bytes.subarray(k * h * w * 3, (k + 1) * h * w * 3)));
      // written last: a folder with its metadata is complete
      writeFileAtomic(join(dir, 'metadata.jsonl'), `${p.line}\n`);
      images += n;
    } finally {
      await sc.handles.free({ handles: [g.args.handle] }).catch(() => undefined);
    }
    onPrompt?.(i + 1, prompts.length);
  }
  return { prompts: prompts.length, images };
}
