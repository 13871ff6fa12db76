/**
 * Run-directory checkpoints, atomic:
 *
 *   <out>/checkpoints/step-000100/policy/        written by the sidecar (HF model dir, optimizer, RNG)
 *   <out>/checkpoints/step-000100/trainer.json   the controller's state (completed steps, config)
 *   <out>/checkpoints/latest                     name of the newest complete checkpoint
 *
 * A checkpoint is assembled in `checkpoints/.tmp-step-…` and renamed into place only when complete;
 * `latest` is replaced by rename too. A crash at any point leaves the previous checkpoint usable.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { fsyncDir, writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import { RESUMABLE_CHANGES, type TrainConfig } from './config.js';

export const TRAINER_STATE_FORMAT = 'pairuni-train/1';

export interface TrainerState {
  format: typeof TRAINER_STATE_FORMAT;
  /** Completed optimizer steps of the controller loop (the next step index to run). */
  step: number;
  configDigest: string;
  config: TrainConfig;
  savedAt: string;
  restarts: number;
}

export interface Checkpoint {
  dir: string;
  policyDir: string;
  state: TrainerState;
}

export const checkpointsDir = (out: string) => join(out, 'checkpoints');
const stepName = (step: number) => `step-${String(step).padStart(6, '0')}`;

/** Digest of the config fields that must not change across a resume. */
export function configDigest(c: TrainConfig): string {
  return createHash('sha256').update(JSON.stringify(mathRelevant(c))).digest('hex').slice(0, 16);
}

function mathRelevant(c: TrainConfig): Record<string, unknown> {
  const o: Record<string, unknown> = { ...c };
  for (const k of RESUMABLE_CHANGES) delete o[k];
  return o;
}

/** Throws a ConfigError naming the fields that differ between the stored and the current config. */
export function assertResumable(stored: TrainConfig, current: TrainConfig): void {
  const a = mathRelevant(stored);
  const b = mathRelevant(current);
  const diff = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
  if (diff.length) {
    throw new ConfigError(
      `cannot resume: the config differs from the checkpoint's in ${diff.join(', ')} ` +
        `(only ${RESUMABLE_CHANGES.join(', ')} may change); start a new run directory instead`,
    );
  }
}

function readState(dir: string): TrainerState | undefined {
  try {
    const s = JSON.parse(readFileSync(join(dir, 'trainer.json'), 'utf8')) as TrainerState;
    if (s.format !== TRAINER_STATE_FORMAT || !existsSync(join(dir, 'policy', 'policy.json'))) return undefined;
    return s;
  } catch {
    return undefined;
  }
}

/** The newest complete checkpoint of a run directory, if any. */
export function latestCheckpoint(out: string): Checkpoint | undefined {
  const root = checkpointsDir(out);
  if (!existsSync(root)) return undefined;
  const names: string[] = [];
  try {
    names.push(readFileSync(join(root, 'latest'), 'utf8').trim());
  } catch {
    /* fall back to scanning */
  }
  names.push(...readdirSync(root).filter((n) => /^step-\d+$/.test(n)).sort().reverse());
  for (const n of names) {
    if (!n) continue;
    const dir = join(root, n);
    const state = readState(dir);
    if (state) return { dir, policyDir: join(dir, 'policy'), state };
  }
  return undefined;
}

/**
 * Assembles a checkpoint: `savePolicy(dir)` must write the sidecar's policy directory there; then
 * trainer.json, the rename into place, `latest`, and pruning down to `keep` checkpoints (0: keep all).
 */
export async function writeCheckpoint(
  out: string,
  state: Omit<TrainerState, 'format' | 'savedAt' | 'configDigest'>,
  savePolicy: (policyDir: string) => Promise<void>,
  keep: number,
): Promise<Checkpoint> {
  const root = checkpointsDir(out);
  mkdirSync(root, { recursive: true });
  const name = stepName(state.step);
  const tmp = join(root, `.tmp-${name}-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  const full: TrainerState = {
    format: TRAINER_STATE_FORMAT,
    savedAt: new Date().toISOString(),
    configDigest: configDigest(state.config),
    ...state,
  };
  try {
    await savePolicy(join(tmp, 'policy'));
    writeJsonAtomic(join(tmp, 'trainer.json'), full);
    const dir = join(root, name);
    if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
    fsyncDir(root);
    writeFileAtomic(join(root, 'latest'), `${name}\n`);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  if (keep > 0) {
    const all = readdirSync(root).filter((n) => /^step-\d+$/.test(n)).sort();
    for (const old of all.slice(0, Math.max(0, all.length - keep))) rmSync(join(root, old), { recursive: true, force: true });
  }
  const dir = join(root, name);
  return { dir, policyDir: join(dir, 'policy'), state: full };
}
