/**
 * The training configuration: one zod schema, the single source of truth. Defaults are PairUni §3's
 * Janus-Pro-7B settings (rollout size 4 per side, global batch 16 pairs, CFG 5, β = 0, lr 1e-6,
 * temperature 1.0, at most 1200 steps; the 1B runs use rollout size 8). Settings the paper does not
 * state use GRPO/TRL defaults and say so: ε = 0.2, μ = 1, grad-norm clip 1.0, weight decay 0.
 */
import { readFileSync } from 'node:fs';
import { dirname, extname, join, resolve } from 'node:path';
import { parseDocument, stringify } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { GenConfig, LossConfig, ModelConfig, OptimConfig, UndConfig } from '../contract/config.js';
import { familyOptionIssues, withFamilyDefaults } from '../contract/families/index.js';
import { PAIR_MODES } from '../grpo/advantages.js';
import { RewardConfig, rewardIssues, rewardTerms } from '../contract/reward-config.js';

export { GenConfig, LossConfig, ModelConfig, OptimConfig, UndConfig };

/** The trackers `loggers` may name; `jsonl` (metrics.jsonl) is written whether listed or not. */
export const LOGGER_TYPES = ['jsonl', 'tensorboard', 'wandb', 'mlflow'] as const;

/** `metrics.jsonl` and `eval.jsonl` in the run directory: always written, since a resume reads them. */
export const JsonlLogger = z.object({ type: z.literal('jsonl') }).strict();
/** TensorBoard events in `<out>/tensorboard/`. */
export const TensorboardLogger = z.object({ type: z.literal('tensorboard') }).strict();
/** A W&B run through the `wandb` Python package (docs/training.md#experiment-sinks). */
export const WandbLogger = z
  .object({
    type: z.literal('wandb'),
    /** The W&B project. */
    project: z.string().min(1).default('pairuni'),
    /** The run's display name (unset: W&B's). */
    name: z.string().min(1).optional(),
    /** `offline` writes files to upload later with `wandb sync`; `online` uploads as it goes (needs a W&B login). */
    mode: z.enum(['offline', 'online']).default('offline'),
    /** The directory W&B makes its `wandb/` folder in (unset: `out`, so runs land in `<out>/wandb/`). */
    dir: z.string().min(1).optional(),
  })
  .strict();
/** An MLflow run through the `mlflow` Python client (docs/training.md#experiment-sinks). */
export const MlflowLogger = z
  .object({
    type: z.literal('mlflow'),
    /** Where the runs are stored (unset: the file store `file:<out>/mlruns`). */
    trackingUri: z.string().min(1).optional(),
    /** The MLflow experiment the run belongs to (created when missing). */
    experiment: z.string().min(1).default('pairuni'),
    /** The run's name (unset: MLflow's). */
    name: z.string().min(1).optional(),
  })
  .strict();
/** One entry of `loggers` written as an object: a tracker and its options. */
export const LoggerConfig = z.discriminatedUnion('type', [JsonlLogger, TensorboardLogger, WandbLogger, MlflowLogger]);
/** A parsed {@link LoggerConfig}: defaults filled; `parseTrainConfig` also fills W&B's `dir` and MLflow's `trackingUri`. */
export type LoggerConfig = z.infer<typeof LoggerConfig>;

/** The training configuration (zod schema): data, model, rollout sides, loss, optimiser, steps, output, sidecar. */
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
    /**
     * Where the run reports (docs/training.md#experiment-sinks): tracker names (`['jsonl', 'tensorboard',
     * 'wandb', 'mlflow']`) or objects with their options (`{ type: 'wandb', project: 'x' }`). metrics.jsonl
     * is written either way. Unset: jsonl, and tensorboard when `log.tensorboard` (default true).
     */
    loggers: z.array(z.union([z.enum(LOGGER_TYPES), LoggerConfig])).optional(),
    log: z
      .object({
        /** TensorBoard events in `out/tensorboard/`; with `loggers` given, the same as listing `tensorboard` there. */
        tensorboard: z.boolean().default(true),
        /** Save a PNG grid of generated images every N steps (0: never). */
        sampleEvery: z.number().int().min(0).default(50),
        /** Cosine between understanding and generation gradients (App. D); costs one gradient copy. */
        gradCosine: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    eval: z
      .object({
        /** Evaluate the current policy every N steps, and at step 0 and the end (0: never). */
        every: z.number().int().min(0).default(0),
        /** Held-out PairUG file: the first `samples` pairs are evaluated (needed when `every` > 0). */
        data: z.string().min(1).optional(),
        /** Pairs evaluated per side: one answer per question, one image per prompt. */
        samples: z.number().int().min(1).default(16),
        /** The generation scorer (any reward source, e.g. `{ name: 'shapes' }`); default: `gen.reward`. */
        reward: RewardConfig.optional(),
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

/** A parsed {@link TrainConfig}: defaults filled (and paths resolved, through {@link parseTrainConfig}). */
export type TrainConfig = z.infer<typeof TrainConfig>;
/** What a config may leave out: every defaulted field optional. */
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
    ? [
        ...(['load', 'und', 'gen'] as const).flatMap((w) =>
          familyOptionIssues(r.data.model.adapter, w, w === 'load' ? r.data.model.options : r.data[w].options),
        ),
        ...sideRewardIssues(r.data.und.reward, 'und'),
        ...sideRewardIssues(r.data.gen.reward, 'gen'),
        ...sideRewardIssues(r.data.eval.reward, 'gen', 'eval.reward'),
        ...(r.data.eval.every > 0 && !r.data.eval.data
          ? ['eval.data: evaluation every N steps (eval.every) needs a held-out PairUG file']
          : []),
        ...(r.data.eval.every > 0 && r.data.sidecar.ranks > 1
          ? ['eval.every: evaluation during training runs on one rank (sidecar.ranks 1)']
          : []),
        ...listedLoggerIssues(r.data, input),
      ]
    : zodIssues(r.error.issues, input);
  if (!r.success || issues.length) {
    throw new ConfigError(
      `${source} is not a valid training config:${issues.length === 1 ? ` ${issues[0]}` : issues.map((l) => `\n  ${l}`).join('')}`,
    );
  }
  const c = r.data;
  const abs = (p: string) => resolve(baseDir, p);
  const loggers = resolveLoggers(c, abs);
  return {
    ...c,
    data: abs(c.data),
    out: abs(c.out),
    loggers,
    log: { ...c.log, tensorboard: loggers.some((l) => l.type === 'tensorboard') },
    model: { ...c.model, path: abs(c.model.path), refPath: c.model.refPath ? abs(c.model.refPath) : undefined },
    eval: { ...c.eval, data: c.eval.data ? abs(c.eval.data) : undefined },
    parallel: { parts: c.parallel.parts ?? c.sidecar.ranks },
  };
}

/**
 * `key: message` lines of a failed parse. A reward source and a `loggers` entry are unions of kinds,
 * whose own issues name the whole union; they are replaced by the mistakes of the kind that was written.
 */
function zodIssues(issues: readonly z.core.$ZodIssue[], input: unknown): string[] {
  const done = new Set<string>();
  return issues.flatMap((i) => {
    const [side, key] = i.path;
    if (side === 'loggers') {
      if (done.has(side)) return [];
      done.add(side);
      const sub = loggerIssues((input as Record<string, unknown>).loggers);
      if (sub.length) return sub;
    }
    if ((side === 'und' || side === 'gen') && key === 'reward') {
      if (done.has(side)) return [];
      done.add(side);
      const sub = rewardIssues((input as Record<string, Record<string, unknown> | undefined>)[side]?.reward, [
        side,
        'reward',
      ]);
      if (sub.length) return sub;
    }
    return [`${i.path.join('.') || '(root)'}: ${i.message}`];
  });
}

/** The mistakes of each `loggers` entry, by its index: an unknown tracker, or a bad option of a known one. */
function loggerIssues(raw: unknown): string[] {
  if (!Array.isArray(raw)) return [`loggers: expected a list of trackers (${LOGGER_TYPES.join(', ')})`];
  return raw.flatMap((e, i) => {
    const type = typeof e === 'object' && e !== null && !Array.isArray(e) ? (e as { type?: unknown }).type : e;
    if (typeof type !== 'string' || !(LOGGER_TYPES as readonly string[]).includes(type))
      return [
        `loggers.${i}: unknown logger ${JSON.stringify(type) ?? String(type)} (takes ${LOGGER_TYPES.join(', ')}, or an object { type, ...options })`,
      ];
    const r = LoggerConfig.safeParse(typeof e === 'string' ? { type: e } : e);
    return r.success ? [] : r.error.issues.map((j) => `${['loggers', i, ...j.path].join('.')}: ${j.message}`);
  });
}

/** A tracker listed twice, or `log.tensorboard` written beside `loggers` and saying otherwise. */
function listedLoggerIssues(c: z.infer<typeof TrainConfig>, input: unknown): string[] {
  if (!c.loggers) return [];
  const types = c.loggers.map((l) => (typeof l === 'string' ? l : l.type));
  const twice = types.flatMap((t, i) => (types.indexOf(t) < i ? [`loggers.${i}: '${t}' is listed twice`] : []));
  const written = (input as { log?: { tensorboard?: unknown } }).log?.tensorboard;
  const listed = types.includes('tensorboard');
  const clash =
    typeof written === 'boolean' && written !== listed
      ? [
          `log.tensorboard: ${written} disagrees with loggers, which ${listed ? 'lists' : 'leaves out'} 'tensorboard' (give one of the two)`,
        ]
      : [];
  return [...twice, ...clash];
}

/**
 * `loggers` as objects with every default filled: jsonl first (it is always written), W&B's `dir` and a
 * file store's path absolute. Unset, it is jsonl and, when `log.tensorboard`, tensorboard.
 */
function resolveLoggers(c: z.infer<typeof TrainConfig>, abs: (p: string) => string): LoggerConfig[] {
  const out = abs(c.out);
  const listed = (c.loggers ?? (c.log.tensorboard ? ['tensorboard' as const] : [])).map((l) =>
    typeof l === 'string' ? LoggerConfig.parse({ type: l }) : l,
  );
  const all = listed.some((l) => l.type === 'jsonl') ? listed : [JsonlLogger.parse({ type: 'jsonl' }), ...listed];
  return all.map((l) => {
    if (l.type === 'wandb') return { ...l, dir: abs(l.dir ?? out) };
    if (l.type !== 'mlflow') return l;
    const uri = l.trackingUri ?? `file:${join(out, 'mlruns')}`;
    // a relative file store is relative to the config, as every other path in it
    const file = /^file:(?!\/)(.*)$/.exec(uri);
    return { ...l, trackingUri: file ? `file:${abs(file[1])}` : uri };
  });
}

/** Sources a side cannot use: sidecar plug-ins score images (generation); the accuracy reward scores answers (understanding). */
function sideRewardIssues(cfg: RewardConfig | undefined, side: 'und' | 'gen', path = `${side}.reward`): string[] {
  if (!cfg) return [];
  return rewardTerms(cfg, side).flatMap(({ key, source }) => {
    const at = 'sum' in cfg ? `${path}.sum.${key}.source` : path;
    if (side === 'und' && 'name' in source)
      return [
        `${at}: a sidecar reward plug-in ('${source.name}') scores generated images; the understanding side takes { builtin: 'accuracy' }, { callback }, { url } or a sum of these`,
      ];
    if (side === 'gen' && 'builtin' in source)
      return [
        `${at}: the built-in accuracy reward scores answers; the generation side takes a plug-in { name, config }, { callback }, { url } or a sum of these`,
      ];
    return [];
  });
}

/** The formats a config file may be in, by its extension. */
export type ConfigFormat = 'json' | 'yaml';

/** `.yaml`/`.yml` is YAML; anything else JSON (`.json`, and any name a JSON config had before YAML was read). */
export function configFormat(file: string): ConfigFormat {
  const ext = extname(file).toLowerCase();
  return ext === '.yaml' || ext === '.yml' ? 'yaml' : 'json';
}

/** `file:line:col: message` of a text that does not parse, 1-based, as editors jump to it. */
function at(file: string, text: string, pos: number, message: string): string {
  const before = text.slice(0, pos).split('\n');
  return `${file}:${before.length}:${before[before.length - 1].length + 1}: ${message}`;
}

/** A config file's object, as written (nothing validated yet): JSON or YAML by the file's extension. */
export function readTrainConfigFile(file: string): { raw: Record<string, unknown>; format: ConfigFormat } {
  const format = configFormat(file);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config ${file}: ${(e as Error).message}`, { cause: e });
  }
  let raw: unknown;
  if (format === 'yaml') {
    const doc = parseDocument(text, { prettyErrors: false });
    const e = doc.errors[0];
    if (e) throw new ConfigError(`cannot parse config ${at(file, text, e.pos[0], e.message.split('\n')[0])}`);
    raw = doc.toJS();
  } else {
    try {
      raw = JSON.parse(text);
    } catch (e) {
      // node 20 says `... in JSON at position N`; the line and column are what a user can find.
      const m = /^(.*?)(?: in JSON)? at position (\d+)/s.exec((e as Error).message);
      const msg = m ? at(file, text, Number(m[2]), m[1]) : `${file}: ${(e as Error).message}`;
      throw new ConfigError(`cannot parse config ${msg}`, { cause: e });
    }
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(
      `config ${file} must hold a ${format === 'yaml' ? 'YAML mapping' : 'JSON object'} of config keys`,
    );
  }
  return { raw: raw as Record<string, unknown>, format };
}

/** Reads a JSON or YAML config file (paths inside resolve against the file's directory). */
export function loadTrainConfig(file: string, overrides: Record<string, unknown> = {}): TrainConfig {
  const { raw } = readTrainConfigFile(file);
  return parseUntrustedTrainConfig(deepMerge(raw, overrides), dirname(resolve(file)), file);
}

/** One dotted override, `--set loss.beta=0.04`: the key path and its value. */
export interface ConfigSet {
  path: string[];
  value: unknown;
}

type Def = { type: string; innerType?: z.ZodType; shape?: Record<string, z.ZodType> };
const def = (s: z.ZodType) => (s as unknown as { _zod: { def: Def } })._zod.def;

/** The schema under defaults and optionals: the object (or record, or leaf) the user writes. */
function bare(s: z.ZodType): z.ZodType {
  let t = s;
  while (def(t).innerType && ['default', 'prefault', 'optional', 'nullable'].includes(def(t).type))
    t = def(t).innerType!;
  return t;
}

/**
 * Why `path` names no config key (the first segment that is not one, and what its section takes);
 * undefined when it is one. Below a free-form record (the family `options`) any key is accepted here:
 * the family's own schema checks those when the config is parsed.
 */
export function configPathIssue(path: readonly string[]): string | undefined {
  let s: z.ZodType = TrainConfig;
  for (let i = 0; i < path.length; i++) {
    const t = bare(s);
    const d = def(t);
    if (d.type === 'record') return undefined;
    const here = path.slice(0, i).join('.');
    if (d.type !== 'object' || !d.shape) return `${here} is a value, not a section with keys`;
    if (!Object.hasOwn(d.shape, path[i])) {
      const which = i === path.length - 1 ? 'no such config key' : `no config key '${path.slice(0, i + 1).join('.')}'`;
      return `${which} (${here || 'the top level'} takes ${Object.keys(d.shape).join(', ')})`;
    }
    s = d.shape[path[i]];
  }
  return undefined;
}

/** Config keys holding a path: a `--set` value for one is relative to the working directory, as `--out` is. */
const PATH_KEYS = new Set(['data', 'out', 'model.path', 'model.refPath', 'eval.data']);

/**
 * The config with each `--set` applied in order (later ones win); a path that names no key is refused
 * by name before anything is parsed, so a typo is never silently added.
 */
export function applyConfigSets(
  raw: Record<string, unknown>,
  sets: readonly ConfigSet[],
  cwd = process.cwd(),
): Record<string, unknown> {
  let out = raw;
  for (const { path, value } of sets) {
    const issue = configPathIssue(path);
    if (issue) throw new ConfigError(`--set ${path.join('.')}: ${issue}`);
    const v = PATH_KEYS.has(path.join('.')) && typeof value === 'string' && value ? resolve(cwd, value) : value;
    out = setAt(out, path, v);
  }
  return out;
}

/** A copy of `obj` with the value at `path` replaced (an object value too: `--set model.options={}` clears them). */
function setAt(obj: Record<string, unknown>, path: readonly string[], value: unknown): Record<string, unknown> {
  const [k, ...rest] = path;
  if (!rest.length) return { ...obj, [k]: value };
  const cur = obj[k];
  const inner = cur && typeof cur === 'object' && !Array.isArray(cur) ? (cur as Record<string, unknown>) : {};
  return { ...obj, [k]: setAt(inner, rest, value) };
}

/** `a.b=c` → path [a, b], value: JSON when it parses as JSON (`0.04`, `true`, `["x"]`), else the text; undefined when malformed. */
export function parseConfigSet(arg: string): ConfigSet | undefined {
  const eq = arg.indexOf('=');
  if (eq <= 0) return undefined;
  const path = arg.slice(0, eq).split('.');
  if (path.some((k) => !k)) return undefined;
  const text = arg.slice(eq + 1);
  let value: unknown = text;
  try {
    value = JSON.parse(text);
  } catch {
    // a plain string: `--set mode=pair`
  }
  return { path, value };
}

/** The resolved config as the input was written: YAML for a YAML file, else JSON. */
export function formatTrainConfig(cfg: TrainConfig, format: ConfigFormat): string {
  const plain = JSON.parse(JSON.stringify(cfg)) as unknown; // drops the undefined optionals, as JSON would
  return format === 'yaml' ? stringify(plain, { lineWidth: 0 }).trimEnd() : JSON.stringify(plain, null, 2);
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
export const RESUMABLE_CHANGES = ['steps', 'out', 'log', 'loggers', 'eval', 'checkpoint', 'sidecar'] as const;
