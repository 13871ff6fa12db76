/**
 * Generated images in the folder layout GenEval's evaluator reads (github.com/djghosh13/geneval,
 * `evaluation/evaluate_images.py`), so a checkpoint is scored with the official evaluator:
 *
 *   <out>/<index:05d>/metadata.jsonl    the prompt's metadata line (one JSON object)
 *   <out>/<index:05d>/samples/<k:05d>.png
 *
 * `index` is the 0-based position of the prompt in the metadata file, `k` the sample number; the
 * evaluator reads every all-digit folder and every `<digits>.png` in its `samples/`.
 *
 * Resumable: a folder counts as done when its metadata equals the prompt's line and it holds exactly
 * the `n` sample files; every file is written atomically and metadata.jsonl last, so an interrupted
 * folder is never taken for a finished one.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { GenConfig, ModelConfig, OptimConfig } from '../contract/config.js';
import { FAMILY_CONFIG_DEFAULTS, familyOptions } from '../contract/families/index.js';
import { GenSampling } from '../contract/ops.js';
import { declaredOf } from '../contract/wire.js';
import { modelFamily } from '../contract/model-family.js';
import { AbortedError, CapabilityError, ConfigError, DataError, PairuniError } from '../errors.js';
import { Sidecar } from '../sidecar/index.js';
import { encodePng } from '../train/fixtures.js';
import { writeFileAtomic } from '../util/atomic.js';
import type { LogOptions } from '../util/log.js';

/** GenEval's own defaults (generation/diffusers_generate.py: `--n_samples 4`, `--seed 42`). */
export const GENEVAL_SAMPLES = 4;
/** GenEval's default sampling seed (`--seed 42`). */
export const GENEVAL_SEED = 42;

/** One line of a GenEval metadata file: `prompt` and `tag` (the evaluator reads both), plus its own keys. */
export interface GenEvalPrompt {
  /** 0-based position among the file's prompts: the folder name. */
  index: number;
  /** 1-based line number in the file (for messages). */
  line: number;
  /** The text to generate from. */
  prompt: string;
  /** GenEval's task category (`single_object`, `counting`, `colors`, ...), read by its evaluator. */
  tag: string;
  /** The line as written (trimmed): copied verbatim into the folder's metadata.jsonl. */
  text: string;
}

/**
 * Reads a GenEval metadata file (`evaluation_metadata.jsonl`): one JSON object per line with a
 * non-empty string `prompt` and `tag`. Blank lines are skipped. A bad line is a DataError naming the
 * file and its line number.
 */
export function readGenEvalPrompts(path: string): GenEvalPrompt[] {
  let raw: string;
  try {
    raw = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(
      `prompts file ${path} is ${code === 'ENOENT' ? 'not found' : `unreadable (${code ?? String(e)})`}`,
      path,
      undefined,
      { cause: e },
    );
  }
  const out: GenEvalPrompt[] = [];
  raw.split(/\r?\n/).forEach((l, i) => {
    const text = l.trim();
    if (!text) return;
    const line = i + 1;
    const bad = (why: string, cause?: unknown) =>
      new DataError(`${path}:${line}: ${why}`, path, line, cause ? { cause } : undefined);
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (e) {
      throw bad(`not valid JSON (${(e as Error).message})`, e);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      throw bad('must be a JSON object with "prompt" and "tag"');
    const m = v as Record<string, unknown>;
    for (const k of ['prompt', 'tag'] as const) {
      if (typeof m[k] !== 'string' || !(m[k] as string).trim())
        throw bad(`"${k}" must be a non-empty string, got ${JSON.stringify(m[k]) ?? 'nothing'}`);
    }
    out.push({ index: out.length, line, prompt: m.prompt as string, tag: m.tag as string, text });
  });
  if (!out.length) throw new DataError(`prompts file ${path} holds no prompts`, path);
  return out;
}

/** `<out>/<index:05d>`, as GenEval names a prompt's folder. */
export const genEvalFolder = (out: string, index: number): string => join(out, String(index).padStart(5, '0'));
/** `<k:05d>.png`, as GenEval names a sample. */
export const genEvalSampleName = (k: number): string => `${String(k).padStart(5, '0')}.png`;
const SAMPLE_FILE = /^\d+\.png$/;

/** Width and height from a PNG's IHDR chunk (bytes 16–23). */
function pngSize(path: string): { width: number; height: number } {
  const b = readFileSync(path);
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
}

/** Whether `dir` already holds this prompt's metadata and exactly its `n` samples. */
export function genEvalFolderComplete(dir: string, p: GenEvalPrompt, n: number): boolean {
  let meta: string;
  let files: string[];
  try {
    meta = readFileSync(join(dir, 'metadata.jsonl'), 'utf8');
    files = readdirSync(join(dir, 'samples')).filter((f) => SAMPLE_FILE.test(f));
  } catch {
    return false;
  }
  const want = new Set(Array.from({ length: n }, (_, k) => genEvalSampleName(k)));
  return meta === `${p.text}\n` && files.length === n && files.every((f) => want.has(f));
}

/** Options of {@link writeGenEvalSamples}. `logger`/`logLevel` reach the sidecar started here (see `Sidecar.spawn`). */
export interface GenEvalSamplesOptions extends LogOptions {
  /** Model directory (a `from_pretrained` directory or a pairuni export). */
  model: string;
  /** GenEval metadata file: one JSON object per line with `prompt` and `tag`. */
  prompts: string;
  /** Output directory (created); folders already complete in it are kept. */
  out: string;
  /** Adapter family; default: the model card's `family`, else config.json's `model_type`, else janus. */
  family?: string;
  /** Images per prompt (default 4, GenEval's). */
  samples?: number;
  /** Sampling seed (default 42, GenEval's); each batch's seed is derived from it and its first prompt's index. */
  seed?: number;
  /** Classifier-free guidance weight (default: the training config's `gen.cfgWeight` default). */
  cfg?: number;
  /** Sampling temperature of the image tokens (default: the family's generation default). */
  temperature?: number;
  /** Prompts per rollout call (default 1: every prompt's images depend on the seed and its index only). */
  batch?: number;
  /** Model `device` (default auto). */
  device?: string;
  /** The family's `model.options` (templates, ...). */
  modelOptions?: Record<string, unknown>;
  /** A running sidecar to use (left open); default: one started here and closed at the end. */
  sidecar?: Sidecar;
  /** Python interpreter of the sidecar started here (default: as `Sidecar.spawn`). */
  python?: string;
  /** torch intra-op threads of the sidecar started here. */
  threads?: number;
  /** Each line the sidecar started here writes (as `Sidecar.spawn`'s `onLog`). */
  onLog?: (line: string) => void;
  /** Aborting stops after the batch being written (AbortedError); the same call resumes. */
  signal?: AbortSignal;
  /** After each prompt: how many of `total` are done (written now or found complete). */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link writeGenEvalSamples} did. */
export interface GenEvalSamplesResult {
  /** The output directory, absolute. */
  out: string;
  /** Prompt indices written by this call, and those found complete and kept. */
  written: number[];
  /** Prompt indices whose folders were already complete and left untouched. */
  kept: number[];
  /** Images per prompt. */
  samples: number;
  /** Image width in pixels. */
  width: number;
  /** Image height in pixels. */
  height: number;
  /** The adapter family used. */
  family: string;
  /** Wall time of the call, seconds. */
  seconds: number;
}

/** The seed of the batch starting at prompt `first` (an int31, as the sampling record takes). */
export function genEvalBatchSeed(seed: number, first: number): number {
  return Number((BigInt(seed) * 1_000_003n + BigInt(first)) % 2_147_483_647n);
}

function checkOptions(o: GenEvalSamplesOptions): void {
  const int = (v: number | undefined, name: string, min: number) => {
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= min))
      throw new ConfigError(`${name} must be an integer >= ${min}, got ${v}`);
  };
  int(o.samples, 'samples', 1);
  int(o.seed, 'seed', 0);
  int(o.batch, 'batch', 1);
  if (o.cfg !== undefined && !Number.isFinite(o.cfg))
    throw new ConfigError(`cfg must be a finite number, got ${o.cfg}`);
  if (o.temperature !== undefined && !(Number.isFinite(o.temperature) && o.temperature > 0))
    throw new ConfigError(`temperature must be a number > 0, got ${o.temperature}`);
  if (!o.model) throw new ConfigError('model must name a model directory');
  if (!existsSync(o.model)) throw new ConfigError(`model directory ${o.model} does not exist`);
  if (!o.out) throw new ConfigError('out must name a directory');
}

/**
 * Generates `samples` images for every prompt of a GenEval metadata file through the gen rollout op
 * and writes them in GenEval's layout under `out`, skipping prompts whose folder is already complete.
 * A model whose adapter cannot generate (does not declare `gen_rollout`) is refused with a
 * CapabilityError; a bad prompts line with a DataError naming its line.
 */
export async function writeGenEvalSamples(o: GenEvalSamplesOptions): Promise<GenEvalSamplesResult> {
  const t0 = Date.now();
  checkOptions(o);
  const model = resolve(o.model);
  const out = resolve(o.out);
  const prompts = readGenEvalPrompts(resolve(o.prompts));
  const n = o.samples ?? GENEVAL_SAMPLES;
  const seed = o.seed ?? GENEVAL_SEED;
  const batch = o.batch ?? 1;
  // Extra numbered folders (from a longer prompts file) would be scored with these: refuse to mix them.
  const extra = existsSync(out)
    ? readdirSync(out)
        .filter((f) => /^\d+$/.test(f) && Number(f) >= prompts.length)
        .sort()
    : [];
  if (extra.length) {
    throw new ConfigError(
      `${out} holds ${extra.length} prompt folder(s) beyond the ${prompts.length} prompts of ${o.prompts} (${extra.slice(0, 3).join(', ')}${extra.length > 3 ? ', …' : ''}); GenEval would score them too: write to an empty directory`,
    );
  }
  const family = o.family ?? modelFamily(model).family;
  const gen = GenConfig.parse({
    ...FAMILY_CONFIG_DEFAULTS[family]?.gen,
    ...(o.cfg !== undefined ? { cfgWeight: o.cfg } : {}),
    ...(o.temperature !== undefined ? { temperature: o.temperature } : {}),
  });
  const modelCfg = ModelConfig.parse({
    adapter: family,
    path: model,
    options: familyOptions(family, 'load', o.modelOptions ?? {}),
    ...(o.device ? { device: o.device } : {}),
  });
  const genOptions = familyOptions(family, 'gen', gen.options);

  const done = new Set(
    prompts.filter((p) => genEvalFolderComplete(genEvalFolder(out, p.index), p, n)).map((p) => p.index),
  );
  const kept = [...done];
  const written: number[] = [];
  let size = { width: 0, height: 0 };
  const stopped = () =>
    new AbortedError(
      `stopped after ${done.size}/${prompts.length} prompts; the same command resumes (finished folders are kept)`,
    );
  o.onProgress?.(done.size, prompts.length);
  if (done.size === prompts.length) {
    size = pngSize(join(genEvalFolder(out, 0), 'samples', genEvalSampleName(0)));
    return { out, written, kept, samples: n, ...size, family, seconds: (Date.now() - t0) / 1000 };
  }

  const own = !o.sidecar;
  const sc =
    o.sidecar ??
    (await Sidecar.spawn({
      python: o.python,
      threads: o.threads,
      onLog: o.onLog,
      logger: o.logger,
      logLevel: o.logLevel,
      signal: o.signal,
    }));
  try {
    if (o.signal?.aborted) throw stopped();
    const loaded = await sc.train.load({ model: modelCfg, optim: OptimConfig.parse({}), seed });
    const caps = loaded.args.capabilities;
    if (!caps.includes('gen_rollout')) {
      throw new CapabilityError(
        `model ${model} (family ${family}) cannot generate images: its adapter declares [${caps.join(', ')}], without 'gen_rollout'`,
        'gen_rollout',
        caps,
      );
    }
    // Fixed batches of the whole file, so a prompt's images never depend on which folders were done.
    for (let first = 0; first < prompts.length; first += batch) {
      const chunk = prompts.slice(first, first + batch);
      if (chunk.every((p) => done.has(p.index))) continue;
      if (o.signal?.aborted) throw stopped();
      const ro = await sc.train.genRollout({
        n,
        items: chunk.map((p) => ({ prompt: p.prompt })),
        sampling: {
          ...declaredOf(GenSampling, gen),
          options: genOptions,
          seed: genEvalBatchSeed(seed, first),
          estSeeds: [0],
        },
      });
      const handle = ro.args.handle;
      try {
        const { tensors } = await sc.train.rolloutImages({ handle });
        const [b, h, w] = tensors.images.shape;
        if (b !== chunk.length * n)
          throw new PairuniError(
            'rollout',
            `the model returned ${b} images for ${chunk.length} prompts × ${n} samples`,
          );
        size = { width: w, height: h };
        const bytes = tensors.images.bytes;
        const per = h * w * 3;
        chunk.forEach((p, j) => {
          if (done.has(p.index)) return;
          const dir = genEvalFolder(out, p.index);
          // The marker goes first and comes back last; stale samples (a larger earlier n) go too.
          rmSync(join(dir, 'metadata.jsonl'), { force: true });
          mkdirSync(join(dir, 'samples'), { recursive: true });
          for (const f of readdirSync(join(dir, 'samples')))
            if (SAMPLE_FILE.test(f)) rmSync(join(dir, 'samples', f), { force: true });
          for (let k = 0; k < n; k++) {
            const at = (j * n + k) * per;
            writeFileAtomic(join(dir, 'samples', genEvalSampleName(k)), encodePng(w, h, bytes.subarray(at, at + per)));
          }
          writeFileAtomic(join(dir, 'metadata.jsonl'), `${p.text}\n`);
          done.add(p.index);
          written.push(p.index);
          o.onProgress?.(done.size, prompts.length);
        });
      } finally {
        await sc.handles.free({ handles: [handle] }).catch(() => undefined);
      }
    }
  } finally {
    if (own) await sc.close().catch(() => undefined);
  }
  return { out, written, kept, samples: n, ...size, family, seconds: (Date.now() - t0) / 1000 };
}
