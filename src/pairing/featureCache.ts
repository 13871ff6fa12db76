/**
 * On-disk feature cache: one directory per backbone key, holding Arrow IPC shards with columns
 * `hash` (SHA-256 of the image bytes, hex) and `vec` (FixedSizeList<Float32>[dim]). Shards are
 * written atomically (util/atomic.ts) and never modified, so an interrupted run loses at most the
 * batch in flight, and a rerun embeds nothing that any earlier run finished.
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  Field,
  FixedSizeList,
  Float32,
  makeData,
  makeVector,
  Table,
  tableFromIPC,
  tableToIPC,
  vectorFromArray,
} from 'apache-arrow';
import { DataError } from '../errors.js';
import { writeFileAtomic } from '../util/atomic.js';

export class FeatureCache {
  readonly dir: string;
  private shardSeq = 0;

  constructor(
    root: string,
    readonly key: string,
    readonly dim: number,
  ) {
    if (!/^[\w.-]+$/.test(key))
      throw new DataError(`feature cache: backbone key '${key}' is not a safe directory name`);
    this.dir = join(root, key);
    mkdirSync(this.dir, { recursive: true });
  }

  /**
   * Copy cached vectors for the wanted hashes into `out` (row r gets hash wanted[r]).
   * Returns which rows were found.
   */
  lookup(wanted: string[], out: Float32Array): Uint8Array {
    const found = new Uint8Array(wanted.length);
    const rowsOf = new Map<string, number[]>();
    wanted.forEach((h, r) => {
      const l = rowsOf.get(h);
      if (l) l.push(r);
      else rowsOf.set(h, [r]);
    });
    for (const f of this.shards()) {
      let t: Table;
      try {
        t = tableFromIPC(readFileSync(join(this.dir, f)));
      } catch (e) {
        throw new DataError(
          `feature cache shard ${join(this.dir, f)} is unreadable (${(e as Error).message}); delete it to re-embed its images`,
          join(this.dir, f),
        );
      }
      const hashes = t.getChild('hash');
      const vec = t.getChild('vec');
      if (!hashes || !vec) throw new DataError(`feature cache shard ${f} lacks hash/vec columns`, join(this.dir, f));
      const dim = (vec.type as FixedSizeList).listSize;
      if (dim !== this.dim)
        throw new DataError(
          `feature cache shard ${f} has ${dim}-d vectors, backbone gives ${this.dim}-d`,
          join(this.dir, f),
        );
      const flat = vec.data[0].children[0].values as Float32Array;
      const base = vec.data[0].children[0].offset;
      // Shards are single-batch (we write them), so child values are contiguous.
      for (let i = 0; i < t.numRows; i++) {
        const rows = rowsOf.get(hashes.get(i) as string);
        if (!rows) continue;
        const v = flat.subarray(base + i * dim, base + (i + 1) * dim);
        for (const r of rows) {
          out.set(v, r * dim);
          found[r] = 1;
        }
        rowsOf.delete(hashes.get(i) as string);
      }
    }
    return found;
  }

  /** Append vectors (rows × dim) for these hashes as a new shard, atomically. */
  append(hashes: string[], vecs: Float32Array): void {
    if (hashes.length === 0) return;
    if (vecs.length !== hashes.length * this.dim)
      throw new RangeError(`append: ${vecs.length} values for ${hashes.length}×${this.dim}`);
    const type = new FixedSizeList(this.dim, new Field('item', new Float32(), false));
    const child = makeData({ type: new Float32(), length: vecs.length, nullCount: 0, data: vecs });
    const vec = makeVector(makeData({ type, length: hashes.length, nullCount: 0, child }));
    const table = new Table({ hash: vectorFromArray(hashes), vec });
    const name = `part-${Date.now().toString(36)}-${process.pid}-${this.shardSeq++}.arrow`;
    writeFileAtomic(join(this.dir, name), tableToIPC(table, 'file'));
  }

  private shards(): string[] {
    return readdirSync(this.dir)
      .filter((f) => f.startsWith('part-') && f.endsWith('.arrow'))
      .sort();
  }
}
