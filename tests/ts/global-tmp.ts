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
  // The trackers' own files, kept out of $HOME: W&B's debug logs (cache) and the staging copies of
  // every logged table (data dir, never removed offline), and MLflow's telemetry state and thread.
  process.env.WANDB_CACHE_DIR ??= join(dir, 'wandb-cache');
  process.env.WANDB_DATA_DIR ??= join(dir, 'wandb-data');
  process.env.MLFLOW_DISABLE_TELEMETRY ??= 'true';
  return () => {
    // tsx keeps its compile cache (`tsx-<uid>`) in TMPDIR when tests start `node --import tsx` children.
    const own = new Set(['torchinductor', 'wandb-cache', 'wandb-data']);
    const left = readdirSync(dir).filter((f) => !/^tsx-\d+$/.test(f) && !own.has(f));
    rmSync(dir, { recursive: true, force: true });
    if (left.length)
      throw new Error(`tests left ${left.length} entries in their TMPDIR: ${left.slice(0, 20).join(', ')}`);
  };
}
