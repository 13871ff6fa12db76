import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fsyncDir, writeFileAtomic, writeJsonAtomic } from '../../../src/util/atomic.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pairuni-atomic-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('writeFileAtomic', () => {
  it('writes text and bytes, creating missing parents', () => {
    const p = join(dir, 'a', 'b', 'f.txt');
    writeFileAtomic(p, 'hello\n');
    expect(readFileSync(p, 'utf8')).toBe('hello\n');
    const q = join(dir, 'bytes.bin');
    writeFileAtomic(q, new Uint8Array([0, 1, 2, 255]));
    expect([...readFileSync(q)]).toEqual([0, 1, 2, 255]);
  });

  it('replaces an existing file and leaves no temp file behind', () => {
    const p = join(dir, 'f.txt');
    writeFileSync(p, 'old');
    writeFileAtomic(p, 'new');
    expect(readFileSync(p, 'utf8')).toBe('new');
    expect(readdirSync(dir)).toEqual(['f.txt']);
  });

  it('throws when the parent is a file, keeping the old content and no temp', () => {
    const parent = join(dir, 'notadir');
    writeFileSync(parent, 'old');
    expect(() => writeFileAtomic(join(parent, 'f.txt'), 'x')).toThrow();
    expect(readFileSync(parent, 'utf8')).toBe('old');
    expect(readdirSync(dir)).toEqual(['notadir']);
  });

  it('throws when the target is a directory, removing its temp file', () => {
    const target = join(dir, 'sub');
    writeFileAtomic(join(target, 'keep.txt'), 'kept');
    expect(() => writeFileAtomic(target, 'x')).toThrow();
    expect(readFileSync(join(target, 'keep.txt'), 'utf8')).toBe('kept');
    expect(readdirSync(dir)).toEqual(['sub']);
  });
});

describe('writeJsonAtomic', () => {
  it('formats with indent 1 by default and a trailing newline', () => {
    const p = join(dir, 'x.json');
    writeJsonAtomic(p, { a: [1] });
    expect(readFileSync(p, 'utf8')).toBe('{\n "a": [\n  1\n ]\n}\n');
    writeJsonAtomic(p, { a: 1 }, 2);
    expect(readFileSync(p, 'utf8')).toBe('{\n  "a": 1\n}\n');
  });
});

describe('fsyncDir', () => {
  it('accepts an existing directory and ignores a missing one', () => {
    fsyncDir(dir);
    fsyncDir(join(dir, 'missing'));
    expect(existsSync(dir)).toBe(true);
  });
});
