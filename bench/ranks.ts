/**
 * `npm run bench -- ranks [--steps N] [--warmup W] [--pairs B] [--k K] [--threads n]`
 *
 * Data-parallel PairGRPO on the tiny Janus at 1 and 2 ranks (torchrun, gloo, CPU), the same parts
 * (`parallel.parts = 2`, so both runs do the same work): steps/s of each and their ratio, and the
 * controller's bytes per step per rank (both directions, all frames) at two answer lengths, next to
 * what the step's images and the model's weights would weigh: the controller moves tokens, texts,
 * rewards and advantages, never pixels or weights.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Sidecar } from '../src/sidecar/index.js';
import { buildTinyJanus, writeTinyPairUG } from '../src/train/fixtures.js';
import { grpoSides, loadArgs, loadPairUG, pairGrpoStep, parseTrainConfig } from '../src/train/index.js';

const r4 = (x: number) => Number(x.toFixed(4));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export async function main(argv: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args: argv,
    options: {
      steps: { type: 'string', default: '4' },
      warmup: { type: 'string', default: '1' },
      pairs: { type: 'string', default: '4' },
      k: { type: 'string', default: '2' },
      threads: { type: 'string', default: '1' },
    },
  });
  const [steps, warmup, pairsN, k, threads] = [values.steps, values.warmup, values.pairs, values.k, values.threads].map(
    Number,
  );
  const dir = mkdtempSync(join(tmpdir(), 'pairuni-bench-ranks-'));
  try {
    const builder = await Sidecar.spawn({ threads, deadMs: 60_000 });
    const modelDir = await buildTinyJanus(builder, join(dir, 'tiny'));
    await builder.close();
    const dataFile = writeTinyPairUG(join(dir, 'data'), 8);
    const pairs = loadPairUG(dataFile);

    const run = async (ranks: number, tokens: number) => {
      const cfg = parseTrainConfig({
        data: dataFile,
        out: join(dir, `out-${ranks}-${tokens}`),
        model: { path: modelDir, device: 'cpu' },
        batchPairs: pairsN,
        und: { k, maxNewTokens: tokens },
        gen: { k, reward: { name: 'brightness' } },
        optim: { lr: 1e-3, microBatch: 4 },
        sidecar: { threads, ranks },
        parallel: { parts: 2 },
      });
      const sc = await Sidecar.spawn({ ranks, threads, deadMs: 60_000 });
      try {
        const loaded = await sc.train.load(loadArgs(cfg));
        const sides = grpoSides(loaded.args.capabilities);
        const times: number[] = [];
        let bytes = 0;
        let undTokens = 0;
        for (let s = 0; s < warmup + steps; s++) {
          const [b0, i0] = [sc.stats.bytesOut, sc.stats.bytesIn];
          const t0 = performance.now();
          const m = await pairGrpoStep(sc, cfg, pairs, s, { sides });
          if (s >= warmup) {
            times.push((performance.now() - t0) / 1000);
            bytes += sc.stats.bytesOut - b0 + sc.stats.bytesIn - i0;
            undTokens += m['und/len_mean'] * pairsN * k;
          }
        }
        return {
          stepS: median(times),
          bytesPerStepPerRank: bytes / steps / ranks,
          undTokensPerStep: undTokens / steps,
        };
      } finally {
        await sc.close();
      }
    };
    const one = await run(1, 4);
    const two = await run(2, 4);
    const twoLong = await run(2, 16);
    // what the controller does not carry: the step's decoded images (B·K, 16×16×3 u8) and the fp32 weights
    const imageBytes = pairsN * k * 16 * 16 * 3;
    return {
      steps,
      pairs: pairsN,
      k,
      steps_per_s_1rank: r4(1 / one.stepS),
      steps_per_s_2ranks: r4(1 / two.stepS),
      speedup_2_vs_1: r4(one.stepS / two.stepS),
      bytes_per_step_per_rank_1rank: Math.round(one.bytesPerStepPerRank),
      bytes_per_step_per_rank_2ranks: Math.round(two.bytesPerStepPerRank),
      bytes_per_step_per_rank_2ranks_long_answers: Math.round(twoLong.bytesPerStepPerRank),
      und_tokens_per_step: r4(two.undTokensPerStep),
      und_tokens_per_step_long_answers: r4(twoLong.undTokensPerStep),
      image_bytes_per_step_not_sent: imageBytes,
      note: 'CPU, gloo, 2 shared cores: ranks compete for the same cores, so steps/s shows overhead, not GPU scaling',
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
