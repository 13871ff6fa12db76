/**
 * `npm run bench -- pairing [--scale 1] [--backend sidecar|ts] [--no-ref] [--seed 0] [--noise 1.65] [--topics N]`
 *
 * Paper scale (scale 1): U 47K + G 60K synthetic ResNet-like 2048-d features (docs/pairing.md §1
 * generator, 8000 topics, noise 1.65), K = 5000, n = 10, δ = 0.6, batch 1024. Runs Algorithm 1
 * through the SDK (sidecar backend by default), then the scikit-learn + numpy reference of the same
 * algorithm on the same file, and returns phase times, the time ratio, the inertia gap and peak RSS.
 * Smaller runs: --scale 0.1 (sizes, K and topics all scale).
 *
 * `--retrieval-only` skips clustering: the paper's aligned counts (1,928 U + 3,043 G, App. B.3, × scale)
 * are removed at random from each side, as in docs/pairing.md §1, and only the two retrievals run.
 *
 * Retrieval is run in both readings of Algorithm 1 lines 10–14 on the same remaining sets:
 * 'literal' (the default, inside the SDK run: each G item queries the U items still free) and
 * 'static' (top-n lists over the initial remaining set), each with pairs, unpaired G and time.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SidecarBackend } from '../src/pairing/backend/sidecar.js';
import { TsBackend } from '../src/pairing/backend/ts.js';
import type { PairingBackend } from '../src/pairing/backend/types.js';
import { l2NormalizeRows, matrix } from '../src/pairing/matrix.js';
import { Rng } from '../src/util/prng.js';
import { pairFeatures } from '../src/pairing/pair.js';
import { retrieve } from '../src/pairing/retrieve.js';
import { resolvePython } from '../src/sidecar/index.js';

const REF = new URL('./_pairing_ref.py', import.meta.url).pathname;

function py(args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, OMP_NUM_THREADS: '2', OPENBLAS_NUM_THREADS: '2', MKL_NUM_THREADS: '2' };
    const p = spawn(resolvePython(), [REF, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env });
    let out = '';
    p.stdout.on('data', (b) => (out += b));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0) return reject(new Error(`_pairing_ref.py ${args[0]} exited ${code}`));
      resolve(JSON.parse(out.trim().split('\n').pop()!));
    });
  });
}

const r3 = (x: number): number => Math.round(x * 1000) / 1000;

/** Both retrieval readings on the same remaining sets, with random aligned removal (no clustering). */
async function retrievalOnly(
  backend: PairingBackend,
  X: ReturnType<typeof matrix>,
  nU: number,
  nG: number,
  scale: number,
  seed: number,
) {
  l2NormalizeRows(X);
  const rng = new Rng(seed);
  const dropU = new Set(rng.sampleWithoutReplacement(nU, Math.round(1928 * scale)));
  const dropG = new Set(rng.sampleWithoutReplacement(nG, Math.round(3043 * scale)));
  const uRem = Int32Array.from({ length: nU }, (_, i) => i).filter((i) => !dropU.has(i));
  const gRem = Int32Array.from({ length: nG }, (_, j) => nU + j).filter((i) => !dropG.has(i - nU));
  const xh = await backend.upload(X);
  const out: Record<string, unknown> = { queries: gRem.length, pool: uRem.length };
  for (const mode of ['literal', 'static'] as const) {
    console.error(`[bench pairing] ${mode} retrieval ...`);
    const t = performance.now();
    const r = await retrieve(backend, X, xh, uRem, gRem, {
      retrieval: mode,
      topN: 10,
      threshold: 0.6,
      order: 'dataset',
      pairsPerG: 1,
      extra: 4,
    });
    out[mode] = {
      pairs: r.pairs.length,
      unpaired_g: gRem.length - r.pairs.length,
      all_taken: r.allTaken,
      refills: r.refills,
      time_s: r3((performance.now() - t) / 1000),
    };
    console.error(`[bench pairing]   ${JSON.stringify(out[mode])}`);
  }
  await backend.free(xh);
  return out;
}

export async function main(argv: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args: argv,
    options: {
      scale: { type: 'string', default: '1' },
      backend: { type: 'string', default: 'sidecar' },
      'no-ref': { type: 'boolean', default: false },
      seed: { type: 'string', default: '0' },
      d: { type: 'string', default: '2048' },
      // Lower noise = tighter topics = more U candidates ≥ δ per G item (where the two readings differ).
      noise: { type: 'string', default: '1.65' },
      // Fewer topics = more U items per topic = G items with more than n candidates ≥ δ.
      topics: { type: 'string' },
      'retrieval-only': { type: 'boolean', default: false },
    },
  });
  const scale = Number(values.scale);
  const seed = Number(values.seed);
  const d = Number(values.d);
  const nU = Math.round(47_000 * scale);
  const nG = Math.round(60_000 * scale);
  const K = Math.max(2, Math.round(5000 * scale));
  const topics = values.topics !== undefined ? Number(values.topics) : Math.max(2, Math.round(8000 * scale));
  const dir = mkdtempSync(join(tmpdir(), 'pairuni-bench-'));
  const file = join(dir, 'X.f32');
  try {
    console.error(`[bench pairing] generating U=${nU} G=${nG} d=${d} (topics ${topics}) ...`);
    await py([
      'gen',
      '--out',
      file,
      '--nU',
      String(nU),
      '--nG',
      String(nG),
      '--d',
      String(d),
      '--topics',
      String(topics),
      '--noise',
      values.noise!,
      '--seed',
      String(seed),
    ]);
    const buf = readFileSync(file);
    const X = matrix(nU + nG, d, new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4));

    const backend: PairingBackend =
      values.backend === 'ts' ? new TsBackend() : await SidecarBackend.spawn({ device: 'cpu', spawn: { threads: 2 } });
    if (values['retrieval-only']) {
      try {
        return {
          scale,
          nU,
          nG,
          d,
          topics,
          noise: Number(values.noise),
          topN: 10,
          delta: 0.6,
          aligned_removed: 'random, paper counts',
          retrieval: await retrievalOnly(backend, X, nU, nG, scale, seed),
        };
      } finally {
        await backend.close();
      }
    }
    console.error(`[bench pairing] SDK run (${backend.name} backend), K=${K} ...`);
    const t0 = performance.now();
    const phases: Record<string, number> = {};
    const res = await pairFeatures(
      { features: X, nU },
      { seed, kmeans: { k: K, batchSize: 1024 }, topN: 10, threshold: 0.6 },
      {
        backend,
        onProgress: (phase, done, total) => {
          if (!(phase in phases))
            console.error(`[bench pairing]   ${phase} started at ${((performance.now() - t0) / 1000).toFixed(1)}s`);
          phases[phase] = done / total;
        },
      },
    );
    const totalS = (performance.now() - t0) / 1000;

    // The static reading on the same remaining sets (aligned items removed), same backend.
    console.error('[bench pairing] static top-n retrieval on the same remaining sets ...');
    const inAligned = new Set(res.aligned.map((a) => (a.side === 'U' ? a.index : nU + a.index)));
    const uRem = Int32Array.from({ length: nU }, (_, i) => i).filter((i) => !inAligned.has(i));
    const gRem = Int32Array.from({ length: nG }, (_, j) => nU + j).filter((i) => !inAligned.has(i));
    const xh = await backend.upload(res.features);
    const tS = performance.now();
    const st = await retrieve(backend, res.features, xh, uRem, gRem, {
      retrieval: 'static',
      topN: 10,
      threshold: 0.6,
      order: 'dataset',
      pairsPerG: 1,
      extra: 4,
    });
    const staticS = (performance.now() - tS) / 1000;
    await backend.free(xh);
    const retrieval = {
      queries: gRem.length,
      pool: uRem.length,
      literal: {
        pairs: res.retrieved.length,
        unpaired_g: gRem.length - res.retrieved.length,
        all_taken: res.retrieval.allTaken,
        refills: res.retrieval.refills,
        time_s: r3(res.timingsMs.retrieval / 1000),
      },
      static: {
        pairs: st.pairs.length,
        unpaired_g: gRem.length - st.pairs.length,
        all_taken: st.allTaken,
        time_s: r3(staticS),
      },
    };
    console.error(`[bench pairing] retrieval: ${JSON.stringify(retrieval)}`);
    const sidecarRss = backend instanceof SidecarBackend ? await backend.peakRss() : 0;
    await backend.close();
    const nodeRss = process.resourceUsage().maxRSS * 1024;
    const ms = res.timingsMs;
    const ours = {
      backend: res.backend,
      times_s: {
        upload: r3(ms.upload / 1000),
        kmeans_init: r3(ms.kmeansInit / 1000),
        kmeans_minibatch: r3(ms.kmeansMinibatch / 1000),
        kmeans_labels: r3(ms.kmeansLabels / 1000),
        medoids: r3(ms.medoids / 1000),
        retrieval: r3(ms.retrieval / 1000),
        total: r3(totalS),
      },
      inertia: res.clusters.inertia,
      steps: res.clusters.steps,
      stop: res.clusters.stop,
      aligned: res.aligned.length,
      non_empty: res.clusters.nonEmpty,
      empty: res.clusters.empty,
      largest: res.clusters.largest,
      singletons: res.clusters.singletons,
      retrieved: res.retrieved.length,
      requeried: res.retrieval.requeried,
      peak_rss_node_mb: Math.round(nodeRss / 2 ** 20),
      peak_rss_sidecar_mb: Math.round(sidecarRss / 2 ** 20),
      peak_rss_total_mb: Math.round((nodeRss + sidecarRss) / 2 ** 20),
    };
    console.error(`[bench pairing] SDK: ${JSON.stringify(ours)}`);
    const figures: Record<string, unknown> = {
      scale,
      nU,
      nG,
      d,
      K,
      topics,
      noise: Number(values.noise),
      topN: 10,
      delta: 0.6,
      retrieval,
      ours,
    };
    if (!values['no-ref']) {
      console.error('[bench pairing] scikit-learn + numpy reference ...');
      const ref = await py([
        'run',
        '--x',
        file,
        '--nU',
        String(nU),
        '--nG',
        String(nG),
        '--d',
        String(d),
        '--k',
        String(K),
        '--seed',
        String(seed),
      ]);
      const refTotal = (ref.times_s as Record<string, number>).total;
      figures.reference = { ...ref, peak_rss_mb: Math.round(Number(ref.peak_rss) / 2 ** 20) };
      figures.ratio_total = r3(totalS / refTotal);
      figures.inertia_rel_diff = Number(
        ((res.clusters.inertia - Number(ref.inertia)) / Number(ref.inertia)).toFixed(5),
      );
    }
    return figures;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
