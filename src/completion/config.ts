/**
 * Configuration of semantic completion. The zod schema is the single source of truth: the SDK,
 * the CLI (`--config file.json` plus flags) and the report all go through `parseCompleterConfig`.
 */
import { z } from 'zod';
import { ConfigError } from '../errors.js';

/** USD per one million tokens. */
export const Price = z
  .object({
    inputPerMTok: z.number().nonnegative(),
    outputPerMTok: z.number().nonnegative(),
  })
  .strict();
export type Price = z.infer<typeof Price>;

/** Retry policy of the chat calls (zod schema; `completion.retry`). */
export const RetryConfig = z
  .object({
    /** Transport retries per request (429, 408, 409, 5xx, timeouts, dropped connections). */
    maxRetries: z.number().int().min(0).max(20).default(5),
    baseDelayMs: z.number().int().min(0).default(1000),
    maxDelayMs: z.number().int().min(0).default(60_000),
    /** A server asking for a longer pause than this is waited for this long, then retried. */
    maxRetryAfterMs: z.number().int().min(0).default(120_000),
    /** Spread retries of concurrent requests apart (random factor in [0.5, 1)). */
    jitter: z.boolean().default(true),
  })
  .strict();
/** Parsed {@link RetryConfig}, defaults filled. */
export type RetryConfig = z.infer<typeof RetryConfig>;

/** Spend limits of one run (zod schema; `completion.budget`); reaching one stops the run with BudgetExhaustedError. */
export const BudgetConfig = z
  .object({
    /** HTTP requests this run may send (retries included); unset = unlimited. */
    maxRequests: z.number().int().positive().optional(),
    /**
     * Prompt + completion tokens this run may spend; checked before each request, so calls already
     * in flight can overshoot it by at most `concurrency` responses.
     */
    maxTokens: z.number().int().positive().optional(),
  })
  .strict();
/** Parsed {@link BudgetConfig}. */
export type BudgetConfig = z.infer<typeof BudgetConfig>;

/** Configuration of a {@link Completer} (zod schema): endpoint, models, concurrency, retry, budget, cache. */
export const CompleterConfig = z
  .object({
    /** Any OpenAI-compatible endpoint, e.g. https://api.openai.com/v1, http://localhost:8000/v1 (vLLM), http://localhost:11434/v1 (Ollama). */
    baseURL: z.url(),
    /** Local servers accept any non-empty key. */
    apiKey: z.string().min(1),
    models: z
      .object({
        /** Understanding → caption (needs a vision model; the paper used a strong reasoning model). */
        u2c: z.string().min(1),
        /** Generation → question/choices/answer. */
        g2qa: z.string().min(1),
        /** Consistency checkers; default to the generating model of the same direction. */
        verifyU2c: z.string().min(1).optional(),
        verifyG2qa: z.string().min(1).optional(),
      })
      .strict(),
    /** Attach the reference image to G→QA and its check (the QA is later asked about that image). */
    g2qaWithImage: z.boolean().default(true),
    concurrency: z.number().int().min(1).max(256).default(4),
    /** Per HTTP request. */
    timeoutMs: z.number().int().positive().default(180_000),
    retry: RetryConfig.prefault({}),
    /** Re-asks after an output that fails validation (the error is fed back). */
    maxFormatRetries: z.number().int().min(0).max(10).default(2),
    /** Fresh generations after the consistency check finds a contradiction. */
    maxRegenerations: z.number().int().min(0).max(10).default(2),
    /** Word-count bounds of a synthesized generation prompt (the target is about 30 words). */
    promptWords: z
      .object({ min: z.number().int().min(1).default(15), max: z.number().int().min(1).default(60) })
      .strict()
      .prefault({})
      .refine((w) => w.min <= w.max, { message: 'promptWords.min must be <= promptWords.max' }),
    budget: BudgetConfig.prefault({}),
    pricing: z
      .object({
        default: Price.optional(),
        /** Per model name; overrides `default`. */
        models: z.record(z.string(), Price).default({}),
      })
      .strict()
      .prefault({}),
    /** Append-only JSONL of finished calls and outcomes; without it nothing survives the process. */
    cachePath: z.string().min(1).optional(),
    /** Records that already carry their completion (caption, or question+choices+answer) pass through untouched. */
    keepExisting: z.boolean().default(true),
    request: z
      .object({
        /** Omitted by default: reasoning models reject it. */
        temperature: z.number().min(0).max(2).optional(),
        maxCompletionTokens: z.number().int().positive().optional(),
        /** Send `response_format: {type: 'json_object'}` (OpenAI, vLLM, Ollama support it; some servers do not). */
        jsonMode: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
  })
  .strict();
/** Parsed {@link CompleterConfig}, defaults filled. */
export type CompleterConfig = z.infer<typeof CompleterConfig>;
/** What {@link parseCompleterConfig} accepts: defaulted fields optional, unknown keys refused at compile time. */
export type CompleterConfigInput = z.input<typeof CompleterConfig>;

/**
 * Validates a completer config and fills defaults; `origin` (a file name, say) prefixes the message.
 *
 * @throws ConfigError naming each invalid or unknown field.
 */
export function parseCompleterConfig(input: unknown, origin = 'completion config'): CompleterConfig {
  const r = CompleterConfig.safeParse(input);
  if (!r.success) throw new ConfigError(`${origin}: ${z.prettifyError(r.error)}`, { cause: r.error });
  return r.data;
}

export function priceFor(config: CompleterConfig, model: string): Price | undefined {
  return config.pricing.models[model] ?? config.pricing.default;
}
