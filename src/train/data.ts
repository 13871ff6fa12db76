/**
 * PairUG input for training: read + validate every row up front (so a bad file fails before anything
 * is written), then a deterministic data order that depends only on (seed, step), which is what makes
 * resume exact.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { tableFromIPC } from 'apache-arrow';
import { PairRecord } from '../data/schemas.js';
import { DataError } from '../errors.js';
import { Rng } from '../util/prng.js';

/** A validated pair with absolute image paths. */
export interface TrainPair extends PairRecord {
  /** `u_image` resolved against the PairUG file's folder. */
  u_image_abs: string;
  /** `g_image` resolved against the PairUG file's folder. */
  g_image_abs: string;
}

function plain(v: unknown): unknown {
  if (v === null || v === undefined) return undefined;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'object') {
    const o = v as { toArray?: () => unknown; toJSON?: () => unknown };
    if (typeof o.toArray === 'function' && !(v instanceof Uint8Array))
      return Array.from(o.toArray() as ArrayLike<unknown>, plain);
    if (Array.isArray(v)) return v.map(plain);
  }
  return v;
}

function readRows(file: string): unknown[] {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (e) {
    throw new DataError(`cannot read PairUG file ${file}: ${(e as Error).message}`, file);
  }
  if (/\.(arrow|feather|ipc|arrows)$/i.test(file)) {
    let table;
    try {
      table = tableFromIPC(buf);
    } catch (e) {
      throw new DataError(`${file} is not a valid Arrow IPC file: ${(e as Error).message}`, file);
    }
    const names = table.schema.fields.map((f) => f.name);
    const rows: unknown[] = [];
    for (let i = 0; i < table.numRows; i++) {
      const r: Record<string, unknown> = {};
      for (const n of names) {
        const v = plain(table.getChild(n)?.get(i));
        if (v !== undefined) r[n] = v;
      }
      rows.push(r);
    }
    return rows;
  }
  const rows: unknown[] = [];
  const lines = buf.toString('utf8').split('\n');
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    try {
      rows.push(JSON.parse(line));
    } catch (e) {
      throw new DataError(`${file}:${i + 1}: not valid JSON (${(e as Error).message})`, file, i + 1);
    }
  });
  return rows;
}

/**
 * Loads a PairUG file: every row must match `PairRecord` and both images must exist (relative paths
 * resolve against the file's directory). Errors name the file and the 1-based row.
 */
export function loadPairUG(file: string): TrainPair[] {
  const path = resolve(file);
  if (!existsSync(path)) throw new DataError(`PairUG file ${path} does not exist`, path);
  if (!statSync(path).isFile()) {
    // `pairuni pair --out DIR` writes DIR/pairs.jsonl and DIR/pairs.arrow: a user may well pass DIR.
    const inside = ['pairs.jsonl', 'pairs.arrow'].map((f) => join(path, f)).filter((f) => existsSync(f));
    throw new DataError(
      `PairUG file ${path} is a directory, not a file${inside.length ? ` (it holds ${inside.join(' and ')}: pass one of them)` : ''}`,
      path,
    );
  }
  const base = dirname(path);
  const rows = readRows(path);
  if (rows.length === 0) throw new DataError(`PairUG file ${path} has no rows`, path);
  const seen = new Set<string>();
  return rows.map((raw, i) => {
    const row = i + 1;
    const r = PairRecord.safeParse(raw);
    if (!r.success) {
      const msg = r.error.issues.map((x) => `${x.path.join('.') || '(row)'}: ${x.message}`).join('; ');
      throw new DataError(`${path} row ${row}: ${msg}`, path, row);
    }
    const p = r.data;
    if (seen.has(p.pair_id)) throw new DataError(`${path} row ${row}: duplicate pair_id '${p.pair_id}'`, path, row);
    seen.add(p.pair_id);
    const letterIndex = p.answer.charCodeAt(0) - 65;
    if (letterIndex >= p.choices.length) {
      throw new DataError(`${path} row ${row}: answer '${p.answer}' but only ${p.choices.length} choices`, path, row);
    }
    const abs = (f: string) => (isAbsolute(f) ? f : resolve(base, f));
    const u = abs(p.u_image);
    const g = abs(p.g_image);
    for (const [field, f] of [
      ['u_image', u],
      ['g_image', g],
    ] as const) {
      if (!existsSync(f))
        throw new DataError(`${path} row ${row}: ${field} '${p[field]}' does not exist (${f})`, path, row);
    }
    return { ...p, u_image_abs: u, g_image_abs: g };
  });
}

/** A seeded permutation of 0..n−1 for one epoch of one stream (0: pairs/und side, 1: vanilla's gen side). */
function epochOrder(n: number, seed: number, epoch: number, stream: number): Int32Array {
  const rng = new Rng(seed * 1_000_003 + epoch * 7919 + stream * 104_729 + 1);
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  return rng.shuffle(a);
}

/**
 * Item indices of training step `step` (0-based): the step consumes positions
 * [step·batch, (step+1)·batch) of an endless sequence of shuffled epochs.
 */
export function stepIndices(
  n: number,
  batch: number,
  step: number,
  seed: number,
  stream = 0,
): { indices: number[]; epoch: number } {
  const out: number[] = [];
  let cached = -1;
  let order: Int32Array | undefined;
  const start = step * batch;
  for (let pos = start; pos < start + batch; pos++) {
    const epoch = Math.floor(pos / n);
    if (epoch !== cached) {
      order = epochOrder(n, seed, epoch, stream);
      cached = epoch;
    }
    out.push(order![pos % n]);
  }
  return { indices: out, epoch: Math.floor(start / n) };
}
