/**
 * Where a side's rewards come from (`und.reward`, `gen.reward` in the training config): a reward
 * registered in the sidecar, a TypeScript function, a reward server over HTTP, or a weighted sum of
 * these. The sidecar never sees these records (only a plug-in's `{ name, config }` crosses the wire, as
 * the `Reward` record); the controller resolves them (src/train/reward-sources.ts).
 */
import { z } from 'zod';
import { RetryConfig } from '../completion/config.js';

/** A generation reward registered in the sidecar (`hps` needs config.checkpoint; `shapes`, `brightness`, ...). */
export const RewardSpec = z
  .object({ name: z.string().min(1).default('hps'), config: z.record(z.string(), z.unknown()).default({}) })
  .strict();

/** The understanding side's built-in reward: accuracy of the parsed option letter + `und.formatWeight` · format. */
export const BuiltinRewardSource = z.strictObject({ builtin: z.literal('accuracy') });

/** A TypeScript function passed to `train()` in `TrainOptions.rewards` under this name. */
export const CallbackRewardSource = z.strictObject({ callback: z.string().min(1) });

/**
 * A reward server over HTTP (examples/reward_server.py wraps any sidecar reward plug-in). Requests
 * are sent `batchSize` items at a time; a request that times out or gets a retryable status (408, 409,
 * 425, 429, 5xx but 501) is sent again under the `retry` policy of the completion client.
 */
export const RemoteRewardSource = z.strictObject({
  url: z.url({ protocol: /^https?$/ }),
  /** Per HTTP request, seconds. */
  timeoutS: z.number().positive().default(120),
  /** Items per request. */
  batchSize: z.number().int().min(1).default(64),
  /** Name of an environment variable whose value is sent as `Authorization: Bearer <value>` (never stored in the config). */
  authEnv: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name')
    .optional(),
  retry: RetryConfig.prefault({ maxRetries: 2, baseDelayMs: 500, maxDelayMs: 10_000 }),
});

/** One source: anything but a sum. */
export const RewardSource = z.union([BuiltinRewardSource, CallbackRewardSource, RemoteRewardSource, RewardSpec]);

/** A term of a weighted sum; its key in `sum` names its metric (`gen/reward/<key>`). */
export const RewardTerm = z.strictObject({
  weight: z.number().refine(Number.isFinite, 'a finite number'),
  source: RewardSource,
});

/** r = Σ weight · r_source, combined before group normalisation; each term is logged on its own. */
export const RewardSum = z.strictObject({
  sum: z
    .record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . - (it names a metric)'), RewardTerm)
    .refine((s) => Object.keys(s).length > 0, 'at least one term'),
});

/** A side's reward: one source or a weighted `sum` of sources (docs/training.md#reward-sources). */
export const RewardConfig = z.union([
  RewardSum,
  BuiltinRewardSource,
  CallbackRewardSource,
  RemoteRewardSource,
  RewardSpec,
]);

export type RewardSpec = z.infer<typeof RewardSpec>;
export type RemoteRewardSource = z.infer<typeof RemoteRewardSource>;
export type RewardSource = z.infer<typeof RewardSource>;
export type RewardConfig = z.infer<typeof RewardConfig>;
export type RewardConfigInput = z.input<typeof RewardConfig>;

/** The source kind a written value means, by the key that only that kind has (a plug-in has none). */
function sourceSchema(v: unknown): z.ZodType {
  const has = (k: string) => typeof v === 'object' && v !== null && Object.hasOwn(v, k);
  if (has('sum')) return RewardSum;
  if (has('builtin')) return BuiltinRewardSource;
  if (has('callback')) return CallbackRewardSource;
  if (has('url')) return RemoteRewardSource;
  return RewardSpec;
}

/**
 * The issues of a reward value that failed as a union, as the kind it was meant to be reports them:
 * `gen.reward.timeoutS: Too small` rather than zod's `Invalid input` for the whole union.
 */
export function rewardIssues(value: unknown, path: readonly PropertyKey[]): string[] {
  const schema = sourceSchema(value);
  const r = schema.safeParse(value);
  if (r.success) return [];
  const sources = new Set<string>();
  return r.error.issues.flatMap((i) => {
    // a term's source is itself a union: report it as the kind written there
    if (schema === RewardSum && i.path.length >= 3 && i.path[2] === 'source') {
      const key = String(i.path[1]);
      if (sources.has(key)) return [];
      sources.add(key);
      const term = ((value as { sum: Record<string, unknown> }).sum[key] ?? {}) as { source?: unknown };
      const sub =
        sourceSchema(term.source) === RewardSum ? [] : rewardIssues(term.source, [...path, 'sum', key, 'source']);
      if (sub.length) return sub;
    }
    return [`${[...path, ...i.path].join('.')}: ${i.message}`];
  });
}

/** The (name, source) leaves of a reward config: the single source under `name`, or each term of a sum. */
export function rewardTerms(
  cfg: RewardConfig,
  name: string,
): Array<{ key: string; weight: number; source: RewardSource }> {
  return 'sum' in cfg
    ? Object.entries(cfg.sum).map(([key, t]) => ({ key, weight: t.weight, source: t.source }))
    : [{ key: name, weight: 1, source: cfg }];
}

/** How a source is named in errors and logs: `plugin 'hps'`, `callback 'ocr'`, `server http://…`, `built-in accuracy`. */
export function describeSource(s: RewardSource): string {
  if ('builtin' in s) return `built-in ${s.builtin}`;
  if ('callback' in s) return `callback '${s.callback}'`;
  if ('url' in s) return `server ${s.url}`;
  return `plugin '${s.name}'`;
}
