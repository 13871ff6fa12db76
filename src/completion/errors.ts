/**
 * Errors specific to semantic completion. Item-level problems (bad LLM output, contradictions,
 * refusals) are not errors: they become recorded rejections. These are for conditions that stop
 * the run or that internal layers use to unwind an item.
 */
import { PairuniError } from '../errors.js';

/**
 * The LLM endpoint failed in a way retrying will not fix (bad key, unknown model, wrong URL), or a
 * transient failure outlasted every retry. The run stops; everything finished is in the cache.
 */
export class CompletionApiError extends PairuniError {
  constructor(
    message: string,
    /** HTTP status, or undefined for timeouts / connection failures. */
    readonly status: number | undefined,
    /** 'fatal' = configuration-like (401/403/404/...), 'unavailable' = retries exhausted. */
    readonly kind: 'fatal' | 'unavailable',
    options?: { cause?: unknown },
  ) {
    super('llm_api', message, options);
  }
}

/**
 * The endpoint refused this particular request (400/413/422: e.g. image too large, context
 * exceeded). The item is reported unfinished, not rejected, so a rerun with other settings retries it.
 */
export class RequestRejectedError extends PairuniError {
  constructor(
    message: string,
    /** The HTTP status of the refusal. */
    readonly status: number,
    options?: { cause?: unknown },
  ) {
    super('llm_request_rejected', message, options);
  }
}

/** The spend guard refused a new request; the item is left for the next run. */
export class BudgetExhaustedError extends PairuniError {
  constructor(message: string) {
    super('budget_exhausted', message);
  }
}

/**
 * Internal: the run was asked to stop (`RunOptions.stop`) and this item needs another request.
 * The completer turns it into an unfinished result (reason 'stopped'); it never reaches a caller.
 */
export class RunStoppedError extends Error {
  constructor(message = 'the run was stopped before this item finished') {
    super(message);
    this.name = 'RunStoppedError';
  }
}
