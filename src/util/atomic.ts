/**
 * The one way this package replaces a file: a reader (or a crash) sees either the old content or
 * the new, never a partial write.
 *
 * The temp file lives in the target's directory because rename is only atomic within one
 * filesystem; its name is unique per process and call so two writers never share a temp file.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/**
 * Flushes a directory's entries, so a rename into it survives a power loss. Some platforms
 * (Windows) cannot open a directory for fsync; there the rename is as durable as it gets.
 */
export function fsyncDir(dir: string): void {
  let fd: number;
  try {
    fd = openSync(dir, 'r');
  } catch {
    return;
  }
  try {
    fsyncSync(fd);
  } catch {
    /* EINVAL/EPERM on filesystems that do not support fsync on directories */
  } finally {
    closeSync(fd);
  }
}

/** Replaces `path` with `data` atomically (temp file + fsync + rename + fsync of the directory). */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const fd = openSync(tmp, 'w');
    try {
      const buf = typeof data === 'string' ? Buffer.from(data) : data;
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(dir);
}

/**
 * Writes `value` as JSON plus a trailing newline. `indent` is a parameter because existing files
 * differ (run directories use 1, reports 2) and their bytes must not change.
 */
export function writeJsonAtomic(path: string, value: unknown, indent: number = 1): void {
  writeFileAtomic(path, `${JSON.stringify(value, null, indent)}\n`);
}
