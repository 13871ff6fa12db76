/** Option parsing shared by `pairuni embed` and `pairuni pair` (backbone, manifests, progress bars). */
import { readFileSync } from 'node:fs';
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
  if (v.weights) spec.weights = v.weights;
  if (v.model) spec.name = v.model;
  if (v.size) spec.size = intOpt(v.size, '--size');
  if (v.device) spec.device = v.device;
  const r = BackboneSpec.safeParse(spec);
  if (!r.success) throw new ConfigError(`--backbone: ${r.error.issues.map((i) => `${i.path.join('.') || 'kind'}: ${i.message}`).join('; ')}`);
  return r.data;
}

export function intOpt(v: unknown, name: string): number {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new ConfigError(`${name} must be an integer, got '${v}'`);
  return n;
}

export function numOpt(v: unknown, name: string): number {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new ConfigError(`${name} must be a number, got '${v}'`);
  return n;
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
