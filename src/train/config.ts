/**
 * The training configuration: one zod schema, the single source of truth. Defaults are PairUni §3's
 * Janus-Pro-7B settings (rollout size 4 per side, global batch 16 pairs, CFG 5, β = 0, lr 1e-6,
 * temperature 1.0, at most 1200 steps; the 1B runs use rollout size 8). Settings the paper does not
 * state use GRPO/TRL defaults and say so: ε = 0.2, μ = 1, grad-norm clip 1.0, weight decay 0.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { GenConfig, LossConfig, ModelConfig, OptimConfig, UndConfig } from '../contract/config.js';
import { familyOptionIssues, withFamilyDefaults } from '../contract/families.js';
import { PAIR_MODES } from '../grpo/advantages.js';

export { GenConfig, LossConfig, ModelConfig, OptimConfig, UndConfig };

export const TrainConfig = z
  .object({
    /** PairUG file (JSONL or Arrow IPC) of PairRecord rows; image paths relative to it. */
    data: z.string().min(1),
    /** Run directory: metrics.jsonl, TensorBoard events, samples/, checkpoints/. */
    out: z.string().min(1),
    model: ModelConfig,
    /** eq. 1 `vanilla`, eq. 2 `pair`, eq. 4 `pairgrpo` (sqrt), Table 7 ablations `linear` and `none`. */
    mode: z.enum(PAIR_MODES).default('pairgrpo'),
    steps: z.number().int().min(1).default(1200),
    /** Pairs per step (paper: global batch 16). */
    batchPairs: z.number().int().min(1).default(16),
    seed: z.number().int().min(0).default(0),
    und: UndConfig.prefault({}),
    gen: GenConfig.prefault({}),
    advantage: z
      .object({ std: z.enum(['unbiased', 'population']).default('unbiased'), eps: z.number().min(0).default(1e-4) })
      .strict()
      .prefault({}),
    loss: LossConfig.prefault({}),
    optim: OptimConfig.prefault({}),
    log: z
      .object({
        tensorboard: z.boolean().default(true),
        /** Save a PNG grid of generated images every N steps (0: never). */
        sampleEvery: z.number().int().min(0).default(50),
        /** Cosine between understanding and generation gradients (App. D); costs one gradient copy. */
        gradCosine: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    checkpoint: z
      .object({
        every: z.number().int().min(0).default(100),
        /** Checkpoints kept (oldest deleted first); 0 keeps all. */
        keep: z.number().int().min(0).default(3),
      })
      .strict()
      .prefault({}),
    sidecar: z
      .object({
        python: z.string().optional(),
        threads: z.number().int().min(1).optional(),
        /** Python modules of plug-ins (a user's adapter, reward, backbone, ops) the sidecar loads. */
        plugins: z.array(z.string().min(1)).default([]),
        /** Restarts after the sidecar dies (each resumes from the latest checkpoint). */
        maxRestarts: z.number().int().min(0).default(2),
        /** Ranks on this host (torchrun; data-parallel PairGRPO with FSDP2). Must divide parallel.parts. */
        ranks: z.number().int().min(1).default(1),
      })
      .strict()
      .prefault({}),
    parallel: z
      .object({
        /**
         * The step's batch is rolled out in this many parts of whole pairs, each with its own seed;
         * rank r serves parts r, r + ranks, ... The samples depend on `parts`, not on the number of
         * ranks, so a run resumes at another world size. Default: sidecar.ranks.
         */
        parts: z.number().int().min(1).optional(),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type TrainConfig = z.infer<typeof TrainConfig>;
export type TrainConfigInput = z.input<typeof TrainConfig>;

/**
 * Validates a config written in TypeScript and fills its defaults; relative `data`, `out`, `model.path`,
 * `model.refPath` resolve against `baseDir`. Typed with the schema's input type, so a misspelled key or
 * a value of the wrong type fails to compile; at run time every mistake is a `ConfigError` naming it.
 */
export function parseTrainConfig(input: TrainConfigInput, baseDir = process.cwd(), source = 'config'): TrainConfig {
  return parseUntrustedTrainConfig(input, baseDir, source);
}

/**
 * `parseTrainConfig` for a value whose shape nothing vouches for (a parsed file, a request body): the
 * same checks, each mistake a `ConfigError` naming the key.
 */
export function parseUntrustedTrainConfig(input: unknown, baseDir = process.cwd(), source = 'config'): TrainConfig {
  const r = TrainConfig.safeParse(withFamilyDefaults(input));
  // A built-in family's options are checked here too, so one of another family fails before anything runs or is written.
  const issues = r.success
    ? (['load', 'und', 'gen'] as const).flatMap((w) => familyOptionIssues(r.data.model.adapter, w, w === 'load' ? r.data.model.options : r.data[w].options))
    : r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
  if (!r.success || issues.length) {
    throw new ConfigError(`${source} is not a valid training config:${issues.length === 1 ? ` ${issues[0]}` : issues.map((l) => `\n  ${l}`).join('')}`);
  }
  const c = r.data;
  const abs = (p: string) => resolve(baseDir, p);
  return {
    ...c,
    data: abs(c.data),
    out: abs(c.out),
    model: { ...c.model, path: abs(c.model.path), refPath: c.model.refPath ? abs(c.model.refPath) : undefined },
    parallel: { parts: c.parallel.parts ?? c.sidecar.ranks },
  };
}

/** Reads a JSON config file (paths inside resolve against the file's directory). */
export function loadTrainConfig(file: string, overrides: Record<string, unknown> = {}): TrainConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`cannot read config ${file}: ${(e as Error).message}`, { cause: e });
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`config ${file} must hold a JSON object`);
  return parseUntrustedTrainConfig(deepMerge(raw as Record<string, unknown>, overrides), dirname(resolve(file)), file);
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && cur && typeof cur === 'object' && !Array.isArray(cur)
        ? deepMerge(cur as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

/** Config fields that may change between a run and its resume (everything else must match). */
export const RESUMABLE_CHANGES = ['steps', 'out', 'log', 'checkpoint', 'sidecar'] as const;
