/**
 * Transport retry policy. The openai client is created with `maxRetries: 0` so that every retry
 * happens here, where it is counted, where the backoff is injectable, and where `retry-after-ms`
 * / `retry-after` from rate-limited or overloaded servers are honoured.
 *
 * The rule, by HTTP status:
 *  - retried (the same request can succeed later): 408, 409, 425, 429 and every 5xx except 501,
 *    plus timeouts, dropped connections and 2xx bodies that are not a chat completion;
 *  - rejected (this request cannot succeed; the item is left unfinished, the run goes on): 400, 413, 415, 422;
 *  - fatal (the endpoint or the configuration is wrong; the run stops): everything else, e.g. 401, 403,
 *    404, 405 and 501 Not Implemented (the server does not implement chat completions), and a 2xx HTML page.
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
export function retryDelayMs(
  f: Extract<Failure, { kind: 'retry' }>,
  retry: number,
  cfg: RetryConfig,
  random?: () => number,
): number {
  if (f.retryAfterMs !== undefined) return Math.min(f.retryAfterMs, cfg.maxRetryAfterMs);
  return backoffMs(retry, cfg, random);
}

const RETRY_STATUS = new Set([408, 409, 425, 429]);
const REJECT_STATUS = new Set([400, 413, 415, 422]);

/** Whether a reply with this HTTP status is worth sending again (see the rule at the top). */
export function isRetryableStatus(status: number): boolean {
  return RETRY_STATUS.has(status) || (status >= 500 && status <= 599 && status !== 501);
}

/**
 * Recognises an HTML page (a proxy's error page, a web UI at the wrong URL) by its Content-Type or
 * by a body starting with `<`; returns the page's <title> when it has one.
 */
export function htmlPage(contentType: string | null | undefined, body: string): { title?: string } | undefined {
  const isHtml =
    /\btext\/html\b|\bapplication\/xhtml\+xml\b/i.test(contentType ?? '') || body.trimStart().startsWith('<');
  if (!isHtml) return undefined;
  const m = /<title[^>]*>([\s\S]*?)<\/title>/i.exec(body);
  const title = m?.[1].replace(/\s+/g, ' ').trim().slice(0, 120);
  return title ? { title } : {};
}

export function htmlMessage(status: number, page: { title?: string }): string {
  return (
    `the endpoint answered with an HTML page (status ${status}${page.title ? `, title "${page.title}"` : ''}), not JSON: ` +
    'is the base URL (--base-url) the API root, e.g. http://host:8000/v1?'
  );
}

export function classifyFailure(err: unknown): Failure {
  if (err instanceof APIUserAbortError) return { kind: 'abort' };
  if (err instanceof APIConnectionTimeoutError)
    return { kind: 'retry', cause: 'timeout', message: 'request timed out' };
  if (err instanceof APIConnectionError) {
    return { kind: 'retry', cause: 'connection', message: `connection failed: ${err.message}` };
  }
  if (err instanceof APIError && typeof err.status === 'number') {
    const status = err.status;
    // The SDK puts a body that is not JSON into the message, after the status.
    const page =
      err.error === undefined
        ? htmlPage(err.headers?.get('content-type'), err.message.replace(/^\d+ /, ''))
        : undefined;
    const message = page ? htmlMessage(status, page) : `HTTP ${status}: ${err.message}`;
    if (isRetryableStatus(status)) {
      return { kind: 'retry', cause: String(status), status, retryAfterMs: retryAfterMs(err.headers), message };
    }
    if (REJECT_STATUS.has(status)) return { kind: 'reject', cause: String(status), status, message };
    return { kind: 'fatal', cause: String(status), status, message };
  }
  return { kind: 'fatal', cause: 'client', message: err instanceof Error ? err.message : String(err) };
}
