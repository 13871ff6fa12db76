/**
 * `npm run bench -- rollout [--rounds 5] [--prompts 4] [--k 4] [--cfg 5] [--image-size 64] [--patch 4]
 *                           [--und-tokens 64] [--threads 1]`
 *
 * The static-cache rollout engine (pairuni_sidecar/rollout, the Janus adapter's default) against the
 * reference dynamic-cache loop (`rollout_engine: reference`) on one tiny random-init Janus on the CPU:
 * image rollouts (prompts × k images, CFG rows batched, ragged prompts) and answer rollouts, the two
 * paths alternating round by round. Prints median seconds, tokens/s and the engine/reference ratio per
 * side, and whether both produced the same tokens. CPU is not the engine's target: it exists for GPU
 * decode (CUDA graphs, tests/gpu/rollout_engine.py); on the CPU the figure shows what it costs there.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { resolvePython } from '../src/sidecar/index.js';

const here = dirname(fileURLToPath(import.meta.url));

export async function main(argv: string[]): Promise<Record<string, unknown>> {
  const opts = ['rounds', 'prompts', 'k', 'cfg', 'image-size', 'patch', 'und-tokens', 'threads'] as const;
  const { values } = parseArgs({
    args: argv,
    options: Object.fromEntries(opts.map((o) => [o, { type: 'string' as const }])),
  });
  const args = opts.flatMap((o) => (values[o] === undefined ? [] : [`--${o}`, String(values[o])]));
  const dir = mkdtempSync(join(tmpdir(), 'pairuni-bench-rollout-'));
  try {
    return await new Promise((resolve, reject) => {
      const threads = String(values.threads ?? 1);
      const env = {
        ...process.env,
        PYTHONPATH: join(here, '..', 'python_sidecar'),
        OMP_NUM_THREADS: threads,
        MKL_NUM_THREADS: threads,
      };
      const p = spawn(resolvePython(), [join(here, '_rollout.py'), dir, ...args], {
        stdio: ['ignore', 'pipe', 'inherit'],
        env,
      });
      let out = '';
      p.stdout.on('data', (b) => (out += b));
      p.on('error', reject);
      p.on('close', (code) => {
        if (code !== 0) return reject(new Error(`_rollout.py exited ${code}`));
        resolve(JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>);
      });
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
