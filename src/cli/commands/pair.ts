/** `pairuni pair`: build a PairUG dataset (Algorithm 1) from a U and a G manifest. */
import { parseArgs } from 'node:util';
import { AbortedError, ConfigError } from '../../errors.js';
import { ABLATIONS, parsePairingConfig } from '../../pairing/config.js';
import { buildPairUG, type BuildPairUGOptions } from '../../pairing/pipeline.js';
import { onInterrupt } from '../../util/interrupt.js';
import {
  intOpt,
  jsonFile,
  missingFlags,
  usageError,
  MANIFEST_HELP,
  MANIFEST_OPTIONS,
  manifestOptions,
  numOpt,
  stageBars,
  userPath,
} from '../options.js';

export const summary = 'build a PairUG dataset: features → aligned medoids → exact greedy retrieved pairs';

const HELP = `usage: pairuni pair --u U_MANIFEST --g G_MANIFEST --out DIR [options]

Writes DIR/pairs.arrow, DIR/pairs.jsonl (PairRecord rows) and DIR/stats.json, and prints the stats.
Deterministic for a given seed, inputs and backend; an interrupted run resumes from the feature cache.

${MANIFEST_HELP}
  --out DIR            output directory (required)
  --config FILE        JSON pairing config (flags below override it)
  --k N                clusters K (default 5000)
  --retrieval R        literal (default: each G item queries the U items still free) | static (top-n
                       lists over the initial remaining set, computed once)
  --top-n N            retrieval candidates per G item (default 10)
  --threshold X        δ, minimum cosine similarity of a retrieved pair (default 0.6)
  --order O            dataset (default, paper) | global-desc
  --seed N             (default 0)
  --kmeans-batch N     mini-batch size (default 1024)
  --max-epochs N       (default 100)
  --refine N           Lloyd iterations after mini-batch k-means (default 0)
  --center             cluster mean-centred features
  --ablation A         ${ABLATIONS.join(' | ')}
  --ablation-weight W  paper (default: random/unpaired pairs get w_p = 1) | sqrt-similarity
  --selection S        medoid (default) | random-member | random (Table 9 ablations)
  --subset N           keep a seeded uniform subset of N pairs (Table 5's PairUG 7.5K)
  --backend B          sidecar (default) | ts (reference; small inputs only)`;

export async function run(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      ...MANIFEST_OPTIONS,
      out: { type: 'string' },
      config: { type: 'string' },
      k: { type: 'string' },
      retrieval: { type: 'string' },
      'top-n': { type: 'string' },
      threshold: { type: 'string' },
      order: { type: 'string' },
      seed: { type: 'string' },
      'kmeans-batch': { type: 'string' },
      'max-epochs': { type: 'string' },
      refine: { type: 'string' },
      center: { type: 'boolean' },
      ablation: { type: 'string' },
      'ablation-weight': { type: 'string' },
      selection: { type: 'string' },
      subset: { type: 'string' },
      backend: { type: 'string', default: 'sidecar' },
    },
    allowPositionals: false,
  });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const missing = missingFlags(v, ['u', 'g', 'out']);
  if (missing) return usageError('pair', missing);
  const backend = v.backend;
  if (backend !== 'sidecar' && backend !== 'ts')
    throw new ConfigError(`--backend must be sidecar or ts, got '${backend}'`);
  // Everything is validated, and every path made absolute against the user's working directory,
  // before any work starts (buildPairUG then checks that --out is usable before embedding).
  const cfg = (v.config ? jsonFile(userPath(v.config)) : {}) as Record<string, any>;
  const km = { ...(cfg.kmeans ?? {}) };
  if (v.k !== undefined) km.k = intOpt(v.k, '--k', { min: 1 });
  if (v['kmeans-batch'] !== undefined) km.batchSize = intOpt(v['kmeans-batch'], '--kmeans-batch', { min: 1 });
  if (v['max-epochs'] !== undefined) km.maxEpochs = numOpt(v['max-epochs'], '--max-epochs', { gt: 0 });
  if (v.refine !== undefined) km.refineIters = intOpt(v.refine, '--refine', { min: 0 });
  if (v.center) km.center = true;
  cfg.kmeans = km;
  if (v['top-n'] !== undefined) cfg.topN = intOpt(v['top-n'], '--top-n', { min: 1 });
  if (v.threshold !== undefined) cfg.threshold = numOpt(v.threshold, '--threshold', { min: -1, max: 1 });
  if (v.order !== undefined) cfg.order = v.order;
  if (v.retrieval !== undefined) cfg.retrieval = v.retrieval;
  if (v.seed !== undefined) cfg.seed = intOpt(v.seed, '--seed');
  if (v.ablation !== undefined) cfg.ablation = v.ablation;
  if (v['ablation-weight'] !== undefined) cfg.ablationWeight = v['ablation-weight'];
  if (v.selection !== undefined) cfg.selection = v.selection;
  if (v.subset !== undefined) cfg.subset = intOpt(v.subset, '--subset', { min: 1 });
  const config = parsePairingConfig(cfg);
  const opts: BuildPairUGOptions = {
    ...manifestOptions(v),
    out: userPath(v.out as string),
    config,
    backend,
  };

  const { signal, dispose } = onInterrupt({ message: 'pairuni pair: finishing the current batch and saving' });
  try {
    const r = await buildPairUG({
      ...opts,
      signal,
      onProgress: stageBars(v.quiet),
    });
    console.log(r.summary);
    console.log(`wrote ${r.files.arrow}, ${r.files.jsonl}, ${r.files.stats}`);
    return 0;
  } catch (e) {
    if (e instanceof AbortedError) {
      console.error(`pairuni pair: ${e.message}; embeddings done so far are cached — rerun the same command to resume`);
      return 130;
    }
    throw e;
  } finally {
    dispose();
  }
}
