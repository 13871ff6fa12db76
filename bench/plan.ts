/**
 * `npm run bench -- plan [--sizes 256,512] [--layers 4] [--micro-batch 4] [--family janus,dimoo,bagel]`
 *
 * `pairuni plan` next to a measured PairGRPO update of the tiny Janus at two sizes (hidden 256 and
 * 512, 4 layers), 1 and 2 ranks (torchrun, gloo, CPU, fp32: the plan's `precision: fp32`) and activation
 * checkpointing off and on, by bench/_plan_step.py:
 *
 * - parameter, gradient and optimizer bytes: each rank's local shard tensors against the plan's
 *   figure for that rank — must be EXACT;
 * - the peak of an update (the second one, AdamW's state already allocated) measured as an RSS delta
 *   (VmHWM reset through /proc/self/clear_refs; glibc's MALLOC_MMAP_THRESHOLD_=65536 so freed tensors
 *   leave RSS) against the plan's update peak less the state that exists before it:
 *   gradients + activations + FSDP buffers — the ratio measured / planned should lie in [0.8, 1.2].
 *
 * The tiny DiMOO (same two sizes, 8 x 8 image codes) likewise: 1 and 2 ranks, checkpointing off and on.
 *
 * The tiny Bagel (same two sizes, `language_model` trained, 64 px generated / 56 px understood images:
 * 16 latent and 16 SigLIP tokens) at 1 and 2 ranks, checkpointing off and on: one SFT step on 4 (und,
 * gen) pairs, measured after a first one. Bagel is data-parallel over pairs, so the plan's micro-batch is
 * the pairs one rank runs (4 at 1 rank, 2 at 2).
 *
 * Last line: `<family>.worst_peak_ratio` (the ratio farthest from 1) and `<family>.exact` (all bytes equal)
 * for each family run (`--family` picks them; all three by default).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { resolvePython, sidecarSourceDir } from '../src/sidecar/python.js';

const here = dirname(fileURLToPath(import.meta.url));
const STATE = ['parameters', 'gradients', 'optimizer'] as const;
const FAMILIES = ['janus', 'dimoo', 'bagel'] as const;
type Family = (typeof FAMILIES)[number];
const FULL_WORLDS = [
  [1, 'off'],
  [2, 'off'],
  [1, 'on'],
  [2, 'on'],
] as const;
const WORLDS: Record<Family, ReadonlyArray<readonly [number, 'on' | 'off']>> = {
  janus: FULL_WORLDS,
  dimoo: FULL_WORLDS,
  bagel: FULL_WORLDS,
};

interface RankRecord {
  rank: number;
  world: number;
  measured: Record<(typeof STATE)[number] | 'step_peak_rss_delta', number>;
  plan: Record<string, number>;
  plan_this_rank: Record<(typeof STATE)[number], number>;
  counts: { params: number; trainable: number };
}

export async function main(argv: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args: argv,
    options: {
      sizes: { type: 'string', default: '256,512' },
      layers: { type: 'string', default: '4' },
      'micro-batch': { type: 'string', default: '4' },
      family: { type: 'string', default: FAMILIES.join(',') },
    },
  });
  const families = String(values.family).split(',');
  const unknown = families.filter((f) => !(FAMILIES as readonly string[]).includes(f));
  if (unknown.length) {
    console.error(`--family: unknown ${unknown.join(', ')} (one or more of ${FAMILIES.join(', ')})`);
    process.exit(2);
  }
  const sizes = String(values.sizes).split(',').map(Number);
  const dir = mkdtempSync(join(tmpdir(), 'pairuni-bench-plan-'));
  const py = resolvePython();
  const env = {
    ...process.env,
    OMP_NUM_THREADS: '1',
    PYTHONPATH: sidecarSourceDir(),
    TMPDIR: dir,
    MALLOC_MMAP_THRESHOLD_: '65536',
  };
  const worker = join(here, '_plan_step.py');
  const rows: Array<Record<string, unknown>> = [];
  const worst: Record<string, number> = Object.fromEntries(families.map((f) => [f, 1]));
  const exact: Record<string, boolean> = Object.fromEntries(families.map((f) => [f, true]));
  const runs = (families as Family[]).flatMap((family) =>
    sizes.map((hidden) => ({ family, hidden, worlds: WORLDS[family] })),
  );
  try {
    for (const { family, hidden, worlds } of runs) {
      const model = join(dir, `${family}-${hidden}`);
      execFileSync(py, [worker, 'build', family, model, String(hidden), String(values.layers)], {
        env,
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      for (const [ranks, ckpt] of worlds) {
        const out = join(dir, `out-${family}-${hidden}-${ranks}-${ckpt}`);
        execFileSync(
          py,
          [
            '-m',
            'torch.distributed.run',
            '--standalone',
            `--nproc-per-node=${ranks}`,
            worker,
            'step',
            family,
            model,
            out,
            String(values['micro-batch']),
            ckpt,
          ],
          {
            env,
            stdio: ['ignore', 'ignore', 'ignore'],
          },
        );
        for (let r = 0; r < ranks; r++) {
          const rec = JSON.parse(readFileSync(`${out}.rank${r}`, 'utf8')) as RankRecord;
          const planned = rec.plan.gradients + rec.plan.activations + rec.plan.fsdp_buffers;
          const ratio = rec.measured.step_peak_rss_delta / planned;
          const same = STATE.every((k) => rec.measured[k] === rec.plan_this_rank[k]);
          exact[family] &&= same;
          if (Math.abs(ratio - 1) > Math.abs(worst[family] - 1)) worst[family] = ratio;
          const mib = (b: number) => (b / 2 ** 20).toFixed(2);
          console.error(
            `${family} h${hidden} ${rec.counts.params} params, ${ranks} rank(s), checkpointing ${ckpt}, rank ${r}: ` +
              STATE.map((k) => `${k} ${rec.measured[k]} / ${rec.plan_this_rank[k]}`).join(', ') +
              ` ${same ? 'EXACT' : 'DIFFER'}; step peak ${mib(rec.measured.step_peak_rss_delta)} MiB measured / ${mib(planned)} MiB planned = ${ratio.toFixed(3)}`,
          );
          rows.push({
            family,
            hidden,
            ranks,
            checkpointing: ckpt,
            rank: r,
            ...Object.fromEntries(STATE.map((k) => [k, [rec.measured[k], rec.plan_this_rank[k]]])),
            peak_ratio: Number(ratio.toFixed(4)),
          });
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    measure:
      'RSS delta of the second update / SFT step (VmHWM after - RSS before), vs plan gradients + activations + fsdp_buffers',
    rows,
    ...Object.fromEntries(
      families.flatMap((f) => [
        [`${f}.exact`, exact[f]],
        [`${f}.worst_peak_ratio`, Number(worst[f].toFixed(4))],
      ]),
    ),
  };
}
