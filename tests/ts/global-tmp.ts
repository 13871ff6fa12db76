/**
 * Every test process gets a private TMPDIR (sidecar socket dirs, fixtures, caches land there), and the
 * run fails if a test left anything in it: tests clean up after themselves, and nothing reaches /tmp.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'pairuni-vitest-'));
  process.env.TMPDIR = dir;
  process.env.TORCHINDUCTOR_CACHE_DIR ??= join(dir, 'torchinductor'); // torch's own cache, removed with the dir
  return () => {
    // tsx keeps its compile cache (`tsx-<uid>`) in TMPDIR when tests start `node --import tsx` children.
    const left = readdirSync(dir).filter((f) => !/^tsx-\d+$/.test(f) && f !== 'torchinductor');
    rmSync(dir, { recursive: true, force: true });
    if (left.length)
      throw new Error(`tests left ${left.length} entries in their TMPDIR: ${left.slice(0, 20).join(', ')}`);
  };
}
