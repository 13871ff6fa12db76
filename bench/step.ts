/**
 * `npm run bench -- step [--steps N] [--warmup W] [--pairs B] [--k K] [--tokens T] [--threads n]`
 *
 * The same tiny-model PairGRPO step driven (a) from TS through the sidecar (`pairGrpoStep`: rollouts,
 * rewards, advantages, update) and (b) in-process in Python: bench/step_inprocess.py replays the exact
 * op calls recorded in (a) (same arguments, seeds and advantages) through the same op functions with
 * no wire in between. The two paths alternate step by step, so a busy machine slows both alike.
 * Prints per-step minima and medians of both and their ratio (target ≤ 1.05).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { invoke, makeClient } from '../src/sidecar/client.js';
import { Sidecar, Tensor, resolvePython } from '../src/sidecar/index.js';
import { buildTinyJanus, writeTinyPairUG } from '../src/train/fixtures.js';
import { loadArgs, loadPairUG, pairGrpoStep, parseTrainConfig } from '../src/train/index.js';

const here = dirname(fileURLToPath(import.meta.url));

interface Recorded {
  op: string;
  args: Record<string, unknown>;
  tensors: Record<string, number[]>;
  result?: Record<string, unknown>;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const r4 = (x: number) => Number(x.toFixed(4));

export async function main(argv: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args: argv,
    options: {
      steps: { type: 'string', default: '12' },
      warmup: { type: 'string', default: '2' },
      pairs: { type: 'string', default: '4' },
      k: { type: 'string', default: '4' },
      tokens: { type: 'string', default: '16' },
      threads: { type: 'string', default: '1' },
    },
  });
  const steps = Number(values.steps);
  const warmup = Number(values.warmup);
  const threads = Number(values.threads);
  const dir = mkdtempSync(join(tmpdir(), 'pairuni-bench-step-'));
  const py = spawn(resolvePython(), [join(here, 'step_inprocess.py'), '--threads', String(threads)], {
    env: { ...process.env, PYTHONPATH: join(here, '..', 'python_sidecar') },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: py.stdout! })[Symbol.asyncIterator]();
  const ask = async (payload: unknown) => {
    py.stdin!.write(`${JSON.stringify(payload)}\n`);
    const next = await lines.next();
    if (next.done) throw new Error('step_inprocess.py exited early');
    return JSON.parse(next.value) as { step_s: number; identical: boolean };
  };
  let sc: Sidecar | undefined;
  try {
    sc = await Sidecar.spawn({ threads });
    const model = await buildTinyJanus(sc, join(dir, 'tiny'));
    const data = writeTinyPairUG(join(dir, 'data'), 16);
    const pairs = loadPairUG(data);
    const cfg = parseTrainConfig({
      data,
      out: join(dir, 'out'),
      model: { path: model, device: 'cpu' },
      batchPairs: Number(values.pairs),
      und: { k: Number(values.k), maxNewTokens: Number(values.tokens) },
      gen: { k: Number(values.k), reward: { name: 'brightness' } },
      optim: { lr: 1e-3, microBatch: 32 },
      log: { tensorboard: false },
    });
    const load = loadArgs(cfg);
    await sc.train.load(load);
    await ask(load);

    const side = sc;
    let calls: Recorded[] = [];
    // The same typed client the trainer uses, over a raw call that records each request as sent.
    const raw = (op: string, args: Record<string, unknown>, tensors: Record<string, unknown>, opts?: object) => {
      const rec: Recorded = {
        op,
        args,
        tensors: Object.fromEntries(
          Object.entries(tensors).map(([k, t]) => [k, Array.from((t as Tensor).data as Float32Array)]),
        ),
      };
      calls.push(rec);
      return side.call(op, args, tensors as never, opts).then((r) => {
        rec.result = r.args;
        return r;
      });
    };
    // One rank: the world API (`sc.all`) is the same typed call on rank 0.
    const recorder = Object.assign(makeClient(raw as never), {
      world: 1,
      all: async (op: never, args: (r: number) => never, payloads?: (r: number) => never) => [
        await invoke(raw as never, op, args(0), payloads?.(0) ?? {}),
      ],
    }) as unknown as Sidecar;
    const ts: number[] = [];
    const inproc: number[] = [];
    let identical = true;
    let inside = 0;
    for (let s = 0; s < warmup + steps; s++) {
      calls = [];
      const t0 = performance.now();
      await pairGrpoStep(recorder, cfg, pairs, s);
      const wall = (performance.now() - t0) / 1000;
      const replay = await ask(calls);
      identical &&= replay.identical;
      if (s >= warmup) {
        ts.push(wall);
        inproc.push(replay.step_s);
        inside += calls.reduce((a, c) => a + ((c.result?.elapsed_s as number | undefined) ?? 0), 0);
      }
    }
    const wallSum = ts.reduce((a, b) => a + b, 0);
    return {
      steps,
      pairs: cfg.batchPairs,
      k: cfg.und.k,
      und_max_new_tokens: cfg.und.maxNewTokens,
      threads,
      ts_sidecar_step_s: r4(Math.min(...ts)),
      python_inprocess_step_s: r4(Math.min(...inproc)),
      ts_sidecar_step_median_s: r4(median(ts)),
      python_inprocess_step_median_s: r4(median(inproc)),
      /** Wall time of the TS-driven steps outside the sidecar's ops (wire, dispatch, TS math) over the op time. */
      transport_overhead: r4((wallSum - inside) / inside),
      ratio_median: Number((median(ts) / median(inproc)).toFixed(3)),
      ratio: Number((Math.min(...ts) / Math.min(...inproc)).toFixed(3)),
      same_update_metrics: identical,
      target_ratio: 1.05,
    };
  } finally {
    py.stdin!.end();
    await sc?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
