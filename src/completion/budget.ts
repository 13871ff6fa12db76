/**
 * The spend guard of one run. Requests are counted before they are sent (so `maxRequests` is never
 * exceeded); tokens are only known afterwards, so `maxTokens` stops new requests once reached.
 * Exhaustion is sticky: the run stops starting requests, and items still needing one are left for
 * the next run (their finished calls are already in the cache).
 */
import type { BudgetConfig } from './config.js';
import { BudgetExhaustedError } from './errors.js';

export class SpendGuard {
  requests = 0;
  tokens = 0;
  exhausted: string | undefined;

  constructor(private readonly limits: BudgetConfig) {}

  /** Call before each HTTP request; throws when the budget does not allow it. */
  acquire(): void {
    if (!this.exhausted) {
      const { maxRequests, maxTokens } = this.limits;
      if (maxRequests !== undefined && this.requests >= maxRequests)
        this.exhausted = `request budget of ${maxRequests} used up`;
      else if (maxTokens !== undefined && this.tokens >= maxTokens)
        this.exhausted = `token budget of ${maxTokens} used up (${this.tokens} spent)`;
    }
    if (this.exhausted) throw new BudgetExhaustedError(this.exhausted);
    this.requests++;
  }

  spend(tokens: number): void {
    this.tokens += tokens;
  }
}
