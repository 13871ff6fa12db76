/** Option parsing shared by `pairuni embed` and `pairuni pair` (backbone, manifests, progress bars). */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import { BackboneSpec } from '../pairing/embed.js';
import type { Stage } from '../pairing/pipeline.js';
import { Progress } from '../util/progress.js';

export const MANIFEST_OPTIONS = {
  u: { type: 'string' },
  g: { type: 'string' },
  backbone: { type: 'string', default: 'resnet50' },
  weights: { type: 'string' },
  model: { type: 'string' },
  size: { type: 'string' },
  device: { type: 'string' },
  'cache-dir': { type: 'string', default: '.pairuni/features' },
  'embed-batch': { type: 'string', default: '64' },
  'u-columns': { type: 'string' },
  'g-columns': { type: 'string' },
  quiet: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

export const MANIFEST_HELP = `  --u PATH             understanding manifest (.jsonl, .arrow, .parquet or a saved HF dataset dir)
  --g PATH             generation manifest (same formats)
  --backbone KIND      resnet50 (default, the paper's) | hf | timm | torchvision | pixels
  --weights PATH       local weights file (resnet50/timm/torchvision) or model directory (hf)
  --model NAME         model name for timm/torchvision
  --size N             pixels embedder side length (default 16)
  --device DEV         auto (default) | cpu | cuda | cuda:N
  --cache-dir DIR      feature cache (default .pairuni/features)
  --embed-batch N      images per sidecar call (default 64)
  --u-columns JSON     column names, e.g. '{"choices":"options","id":"qid"}'
  --g-columns JSON
  --quiet              no progress bars`;

export function backboneFrom(v: Record<string, unknown>): BackboneSpec {
  const spec: Record<string, unknown> = { kind: v.backbone };
  if (v.weights) spec.weights = userPath(String(v.weights));
  if (v.model) spec.name = v.model;
  if (v.size !== undefined) spec.size = intOpt(v.size, '--size', { min: 1, max: 512 });
  if (v.device) spec.device = v.device;
  const r = BackboneSpec.safeParse(spec);
  if (!r.success)
    throw new ConfigError(
      `--backbone: ${r.error.issues.map((i) => `${i.path.join('.') || 'kind'}: ${i.message}`).join('; ')}`,
    );
  return r.data;
}

/** The required flags left out (or given empty), as `--name` words; undefined when none is. */
export function missingFlags(v: Record<string, unknown>, required: string[]): string[] | undefined {
  const missing = required.filter((k) => !v[k]).map((k) => `--${k}`);
  return missing.length ? missing : undefined;
}

/** Exit status of a command line that does not parse (unknown flag, missing value) or lacks a required flag. */
export const USAGE_EXIT = 2;

/** One line naming the missing flags and where to look; returns the usage exit status. */
export function usageError(cmd: string, missing: string[]): number {
  console.error(
    `pairuni ${cmd}: ${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} required (see 'pairuni ${cmd} --help')`,
  );
  return USAGE_EXIT;
}

/** Allowed range of a numeric option; `gt` is an exclusive lower bound. */
export interface Range {
  min?: number;
  max?: number;
  gt?: number;
}

function rangeText(r: Range): string {
  const lo = r.gt !== undefined ? `> ${r.gt}` : r.min !== undefined ? `>= ${r.min}` : undefined;
  if (lo && r.max !== undefined) return r.gt !== undefined ? `in (${r.gt}, ${r.max}]` : `in [${r.min}, ${r.max}]`;
  if (lo) return lo;
  return r.max !== undefined ? `<= ${r.max}` : '';
}

function inRange(n: number, r: Range): boolean {
  return (r.min === undefined || n >= r.min) && (r.gt === undefined || n > r.gt) && (r.max === undefined || n <= r.max);
}

/**
 * Decimal notation only: `Number()` alone also takes '0x2', '0b1', ' 3', 'Infinity', '' (as 0) and, for
 * an integer, '1e2'. Every command parses its numbers here, so one value means the same everywhere.
 */
const INTEGER = /^-?\d+$/;
const DECIMAL = /^-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$/i;

/** Parses an integer option; a ConfigError names the option and the allowed range. */
export function intOpt(v: unknown, name: string, range: Range = {}): number {
  const s = String(v);
  const n = INTEGER.test(s) ? Number(s) : NaN;
  const want = ['an integer', rangeText(range)].filter(Boolean).join(' ');
  if (!Number.isSafeInteger(n) || !inRange(n, range)) throw new ConfigError(`${name} must be ${want}, got '${v}'`);
  return n;
}

/** Parses a number option; a ConfigError names the option and the allowed range. */
export function numOpt(v: unknown, name: string, range: Range = {}): number {
  const s = String(v);
  const n = DECIMAL.test(s) ? Number(s) : NaN;
  const want = ['a number', rangeText(range)].filter(Boolean).join(' ');
  if (!Number.isFinite(n) || !inRange(n, range)) throw new ConfigError(`${name} must be ${want}, got '${v}'`);
  return n;
}

/**
 * A path the user typed, made absolute against the working directory they typed it in: the
 * sidecar (and any remote rank) may run elsewhere.
 */
export function userPath(v: string): string;
export function userPath(v: string | undefined): string | undefined;
export function userPath(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? v : resolve(process.cwd(), v);
}

/** The manifest, backbone and cache options `embed` and `pair` share, validated, paths absolute against the cwd. */
export function manifestOptions(v: Record<string, unknown>) {
  return {
    understanding: userPath(v.u as string),
    generation: userPath(v.g as string),
    backbone: backboneFrom(v),
    cacheDir: userPath(v['cache-dir'] as string),
    batchSize: intOpt(v['embed-batch'], '--embed-batch', { min: 1 }),
    columns: { u: jsonOpt(v['u-columns'], '--u-columns'), g: jsonOpt(v['g-columns'], '--g-columns') },
  };
}

export function jsonOpt(v: unknown, name: string): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  try {
    return JSON.parse(String(v));
  } catch {
    throw new ConfigError(`${name} must be a JSON object, got '${v}'`);
  }
}

export function jsonFile(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(`cannot read config ${path}: ${(e as Error).message}`);
  }
}

/** One progress bar per stage; the previous bar is closed when a new stage starts. */
export function stageBars(quiet: boolean): (stage: Stage, done: number, total: number) => void {
  let cur: { stage: Stage; bar: Progress } | undefined;
  const labels: Record<string, string> = {
    read: 'read manifests',
    'embed-U': 'embed U',
    'embed-G': 'embed G',
    init: 'k-means++',
    minibatch: 'mini-batch k-means',
    lloyd: 'lloyd refine',
    labels: 'labels',
    retrieve: 'retrieval',
    write: 'write',
  };
  return (stage, done, total) => {
    if (quiet) return;
    if (!cur || cur.stage !== stage) {
      cur?.bar.done();
      cur = { stage, bar: new Progress({ label: labels[stage] ?? stage, total }) };
    }
    cur.bar.update(done, total);
    if (done >= total) cur.bar.done();
  };
}
