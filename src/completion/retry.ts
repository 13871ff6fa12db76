/**
 * Transport retry policy. The openai client is created with `maxRetries: 0` so that every retry
 * happens here, where it is counted, where the backoff is injectable, and where `retry-after-ms`
 * / `retry-after` from rate-limited or overloaded servers are honoured.
 */
import { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'openai';
import type { RetryConfig } from './config.js';

/** How a failed request is handled. `cause` is the counter key in the report ('429', 'timeout', ...). */
export type Failure =
  | { kind: 'abort' }
  | { kind: 'retry'; cause: string; status?: number; retryAfterMs?: number; message: string }
  | { kind: 'reject'; cause: string; status: number; message: string }
  | { kind: 'fatal'; cause: string; status?: number; message: string };

/** Retry-After as milliseconds: `retry-after-ms` (OpenAI, vLLM) first, then `retry-after` in seconds or as an HTTP date. */
export function retryAfterMs(headers: Headers | undefined, now = Date.now()): number | undefined {
  if (!headers) return undefined;
  const ms = headers.get('retry-after-ms');
  if (ms !== null && ms.trim() !== '') {
    const v = Number(ms);
    if (Number.isFinite(v) && v >= 0) return Math.ceil(v);
  }
  const ra = headers.get('retry-after');
  if (ra === null || ra.trim() === '') return undefined;
  const secs = Number(ra);
  if (Number.isFinite(secs)) return secs >= 0 ? Math.ceil(secs * 1000) : undefined;
  const at = Date.parse(ra);
  return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
}

/** Exponential backoff for retry number `retry` (0-based), capped, optionally jittered into [0.5, 1) of the value. */
export function backoffMs(retry: number, cfg: RetryConfig, random: () => number = Math.random): number {
  const raw = Math.min(cfg.maxDelayMs, cfg.baseDelayMs * 2 ** retry);
  return cfg.jitter ? Math.round(raw * (0.5 + random() / 2)) : raw;
}

/** The pause before the next attempt: the server's request wins over our own schedule. */
export function retryDelayMs(f: Extract<Failure, { kind: 'retry' }>, retry: number, cfg: RetryConfig, random?: () => number): number {
  if (f.retryAfterMs !== undefined) return Math.min(f.retryAfterMs, cfg.maxRetryAfterMs);
  return backoffMs(retry, cfg, random);
}

const RETRY_STATUS = new Set([408, 409, 425, 429]);
const REJECT_STATUS = new Set([400, 413, 415, 422]);

export function classifyFailure(err: unknown): Failure {
  if (err instanceof APIUserAbortError) return { kind: 'abort' };
  if (err instanceof APIConnectionTimeoutError) return { kind: 'retry', cause: 'timeout', message: 'request timed out' };
  if (err instanceof APIConnectionError) {
    return { kind: 'retry', cause: 'connection', message: `connection failed: ${err.message}` };
  }
  if (err instanceof APIError && typeof err.status === 'number') {
    const status = err.status;
    const message = `HTTP ${status}: ${err.message}`;
    if (RETRY_STATUS.has(status) || status >= 500) {
      return { kind: 'retry', cause: String(status), status, retryAfterMs: retryAfterMs(err.headers), message };
    }
    if (REJECT_STATUS.has(status)) return { kind: 'reject', cause: String(status), status, message };
    return { kind: 'fatal', cause: String(status), status, message };
  }
  return { kind: 'fatal', cause: 'client', message: err instanceof Error ? err.message : String(err) };
}
