/**
 * Run-directory checkpoints, atomic:
 *
 *   <out>/checkpoints/step-000100/policy/        written by the sidecar: DCP shards of the model, optimizer
 *                                                and per-rank RNG (resumable at any number of ranks); the
 *                                                run's final checkpoint also has policy/model (HF format)
 *   <out>/checkpoints/step-000100/trainer.json   the controller's state (completed steps, config)
 *   <out>/checkpoints/latest                     name of the newest complete checkpoint
 *
 * A checkpoint is assembled in `checkpoints/.tmp-step-…-PID/` and renamed into place only when complete;
 * `latest` is replaced by rename too. A crash at any point leaves the previous checkpoint usable; what a
 * SIGKILL leaves behind (the temp directory, a temp file) is removed by `removeStaleTemps` when the
 * next run or resume of that directory starts.
 */
import { createHash } from 'node:crypto';
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import { fsyncDir, writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import { RESUMABLE_CHANGES, type TrainConfig } from './config.js';

export const TRAINER_STATE_FORMAT = 'pairuni-train/1';

/** The controller's side of a checkpoint: its `trainer.json`, read back on resume. */
export interface TrainerState {
  /** `'pairuni-train/1'`: a trainer.json with any other format is not a usable checkpoint. */
  format: typeof TRAINER_STATE_FORMAT;
  /** Completed optimizer steps of the controller loop (the next step index to run). */
  step: number;
  /** 16 hex digits of SHA-256 over the config without the fields a resume may change: equal digests, same training math. */
  configDigest: string;
  /** The run's full config as it was when saved; a resume refuses a config that differs outside the resumable fields. */
  config: TrainConfig;
  /** When the checkpoint was written: ISO 8601, UTC. */
  savedAt: string;
  /** Sidecar restarts after a crash so far in the run; a resume continues the count against `sidecar.maxRestarts`. */
  restarts: number;
}

/** A complete checkpoint of a run directory (`<out>/checkpoints/step-NNNNNN/`). */
export interface Checkpoint {
  /** The checkpoint's directory, `<out>/checkpoints/step-NNNNNN` (the step zero-padded to 6 digits). */
  dir: string;
  /** `<dir>/policy`: the sidecar's sharded model, optimizer and RNG state (plus `model/` in HF format at the run's end); what a resume loads. */
  policyDir: string;
  /** The controller's state stored beside it in `trainer.json`. */
  state: TrainerState;
}

export const checkpointsDir = (out: string) => join(out, 'checkpoints');

/**
 * The run directory cannot be used as asked: it already holds a run and `resume` was not asked for,
 * there is nothing to resume, or `out` is not a (creatable, writable) directory. `message` names the
 * SDK's options (`resume: true`, `out`); `cliMessage` says the same with the command line's flags.
 */
export class RunStateError extends ConfigError {
  /** The same message in terms of the command line's flags (`--resume`, `--out`). */
  readonly cliMessage: string;
  constructor(message: string, options?: { cause?: unknown; cliMessage?: string }) {
    super(message, options);
    this.cliMessage = options?.cliMessage ?? message;
  }
}

const errnoCode = (e: unknown) => (e as NodeJS.ErrnoException | undefined)?.code;

/**
 * Throws a RunStateError naming the path unless `out` is a writable directory or can be created as
 * one (its nearest existing ancestor is a writable directory). Creates nothing: checked before a
 * sidecar is started, so a run that cannot write its results fails at once (the demos check their
 * `out` the same way, naming it as `what`).
 */
export function assertUsableOut(out: string, what = 'the run directory'): void {
  const target = resolve(out);
  for (let p = target; ; p = dirname(p)) {
    let isDir: boolean;
    try {
      isDir = statSync(p).isDirectory();
    } catch (e) {
      const code = errnoCode(e);
      if ((code === 'ENOENT' || code === 'ENOTDIR') && dirname(p) !== p) continue;
      throw new RunStateError(`cannot use out ${out}: ${(e as Error).message}`, { cause: e });
    }
    if (!isDir) {
      const why = p === target ? 'it is a file, not a directory' : `${p} is a file, not a directory`;
      const msg = (opt: string) => `cannot use out ${out} as ${what}: ${why}; choose another ${opt}`;
      throw new RunStateError(msg('`out`'), { cliMessage: msg('--out') });
    }
    try {
      accessSync(p, constants.W_OK | constants.X_OK);
    } catch (e) {
      throw new RunStateError(`cannot use out ${out} as ${what}: ${p === target ? 'it' : p} is not writable`, {
        cause: e,
      });
    }
    return;
  }
}

/** `kill(pid, 0)`: ESRCH means no such process; EPERM means one exists (another user's). */
function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errnoCode(e) === 'EPERM';
  }
}

/**
 * Temp names the run's writers use, with the writing process's PID:
 * - `checkpoints/.tmp-step-NNNNNN-PID/` (writeCheckpoint; a full copy of the checkpoint, with the
 *   sidecar's own `policy` temp dir, `.policy.tmp-PID-hex/` from fsutil.atomic_dir, inside it),
 * - `.NAME.tmp-PID-hex` files beside their target (util/atomic.ts writeFileAtomic: `latest`,
 *   `config.json`, `metrics.jsonl`; fsutil.atomic_file in the sidecar: `samples/*.png`).
 * `.NAME.old-PID-hex` (fsutil.atomic_dir's set-aside copy) is never touched: after a crash at the
 * wrong moment it is the only copy of its directory.
 */
const STALE_TEMP = /^\.(?:tmp-step-\d+-(\d+)|.+\.tmp-(\d+)-[0-9a-f]+)$/;

/**
 * Removes what an interrupted write (SIGKILL, power loss) left in a run directory: the temp names
 * above in `out`, `out/checkpoints` and `out/samples`, when the process that wrote them is gone.
 * A temp carrying this process's own PID is stale too: within a process a run directory is written
 * by one `train()` at a time and a failed write removes its own temp, so such a name comes from an
 * earlier process that had the same PID (PIDs are reused, in containers often the very same one).
 * A temp of another live process is kept: there is no lock on a run directory, so it may belong to a
 * concurrent writer. Returns the removed paths.
 */
export function removeStaleTemps(out: string): string[] {
  const removed: string[] = [];
  for (const dir of [out, checkpointsDir(out), join(out, 'samples')]) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) {
      const m = STALE_TEMP.exec(n);
      if (!m) continue;
      const pid = Number(m[1] ?? m[2]);
      if (pid !== process.pid && pidAlive(pid)) continue;
      rmSync(join(dir, n), { recursive: true, force: true });
      removed.push(join(dir, n));
    }
  }
  return removed;
}
const stepName = (step: number) => `step-${String(step).padStart(6, '0')}`;

/** Digest of the config fields that must not change across a resume. */
export function configDigest(c: TrainConfig): string {
  return createHash('sha256')
    .update(JSON.stringify(mathRelevant(c)))
    .digest('hex')
    .slice(0, 16);
}

function mathRelevant(c: TrainConfig): Record<string, unknown> {
  // Runs from before data parallelism were one part.
  const o: Record<string, unknown> = { ...c, parallel: c.parallel ?? { parts: 1 } };
  for (const k of RESUMABLE_CHANGES) delete o[k];
  return o;
}

/** Throws a ConfigError naming the fields that differ between the stored and the current config. */
export function assertResumable(stored: TrainConfig, current: TrainConfig): void {
  const a = mathRelevant(stored);
  const b = mathRelevant(current);
  const diff = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter(
    (k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]),
  );
  if (diff.length) {
    throw new ConfigError(
      `cannot resume: the config differs from the checkpoint's in ${diff.join(', ')} ` +
        `(only ${RESUMABLE_CHANGES.join(', ')} may change); start a new run directory instead`,
    );
  }
}

/** A checkpoint's trainer state, or why the directory is not a usable checkpoint. */
function readState(dir: string): TrainerState | string {
  if (!existsSync(dir)) return 'it does not exist';
  let s: TrainerState;
  try {
    s = JSON.parse(readFileSync(join(dir, 'trainer.json'), 'utf8')) as TrainerState;
  } catch (e) {
    return errnoCode(e) === 'ENOENT'
      ? 'trainer.json is missing'
      : `trainer.json is unreadable (${(e as Error).message})`;
  }
  if (s?.format !== TRAINER_STATE_FORMAT)
    return `trainer.json has format ${JSON.stringify(s?.format)}, not ${TRAINER_STATE_FORMAT}`;
  if (!existsSync(join(dir, 'policy', 'policy.json'))) return 'policy/policy.json is missing';
  return s;
}

/** A checkpoint directory `latestCheckpoint` passed over, and why. */
export interface SkippedCheckpoint {
  dir: string;
  reason: string;
}

/**
 * The newest complete checkpoint of a run directory, if any. A damaged newer one (trainer.json or
 * policy/policy.json missing or unreadable) is passed over for the one before it; `onSkip` hears of
 * each, so a resume never silently redoes steps (the trainer logs it as a warning).
 */
export function latestCheckpoint(out: string, onSkip?: (s: SkippedCheckpoint) => void): Checkpoint | undefined {
  const root = checkpointsDir(out);
  if (!existsSync(root)) return undefined;
  const names: string[] = [];
  try {
    names.push(readFileSync(join(root, 'latest'), 'utf8').trim());
  } catch {
    /* fall back to scanning */
  }
  names.push(
    ...readdirSync(root)
      .filter((n) => /^step-\d+$/.test(n))
      .sort()
      .reverse(),
  );
  for (const n of new Set(names)) {
    if (!n) continue;
    const dir = join(root, n);
    const state = readState(dir);
    if (typeof state !== 'string') return { dir, policyDir: join(dir, 'policy'), state };
    onSkip?.({ dir, reason: n === names[0] && !existsSync(dir) ? `checkpoints/latest names it, but ${state}` : state });
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
    const all = readdirSync(root)
      .filter((n) => /^step-\d+$/.test(n))
      .sort();
    for (const old of all.slice(0, Math.max(0, all.length - keep)))
      rmSync(join(root, old), { recursive: true, force: true });
  }
  const dir = join(root, name);
  return { dir, policyDir: join(dir, 'policy'), state: full };
}
