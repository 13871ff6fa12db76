/** Counters of one completion run and the report JSON built from them. */
import { priceFor, type CompleterConfig } from './config.js';
import { TEMPLATE_VERSIONS } from './templates.js';
import {
  REJECT_REASONS,
  UNFINISHED_REASONS,
  type CompletionItem,
  type CompletionResult,
  type Direction,
  type RejectReason,
  type UnfinishedReason,
} from './types.js';

/**
 * 'stopped': the stop signal fired, work in flight was finished and cached, nothing new started.
 * 'aborted': the abort signal fired (requests in flight cancelled) or the consumer stopped iterating.
 */
export type StoppedBy = 'running' | 'completed' | 'budget' | 'stopped' | 'aborted' | 'error';

/** Item outcomes and the work spent for one direction (u2c or g2qa). */
export interface DirectionCounts {
  /** Items of this direction: accepted + rejected + unfinished. */
  total: number;
  /** Items completed and kept. */
  accepted: number;
  /** Accepted items whose first draft the checker had rejected. */
  acceptedAfterRegeneration: number;
  /** Rejected items by reason. */
  rejected: Record<RejectReason, number>;
  /** Unfinished items by reason. */
  unfinished: Record<UnfinishedReason, number>;
  /** Outcomes served from the outcome cache / taken from the input as is (no calls). */
  fromCache: number;
  /** Items whose fields were already filled in the input (kept as they were). */
  fromInput: number;
  /** Work done by this run (cached outcomes excluded). */
  formatRetries: number;
  /** Fresh generations this run asked for after a contradiction. */
  regenerations: number;
}

/** Requests, tokens and cost (USD) of one model in a run. */
export interface ModelUsage {
  /** HTTP requests sent, retries included. */
  requests: number;
  /** Prompt tokens billed. */
  inputTokens: number;
  /** Completion tokens billed. */
  outputTokens: number;
  /** null when no price is configured for the model. */
  costUsd: number | null;
}

/** The report of a completion run (`run.report()`, and report.json of the CLI): outcomes, traffic, tokens, cost. */
export interface CompletionReport {
  /** How the run ended (`running` while it goes on). */
  stoppedBy: StoppedBy;
  /** Why the run stopped early, when it did. */
  stopDetail?: string;
  /** ISO time the run started. */
  startedAt: string;
  /** ISO time it ended. */
  finishedAt?: string;
  /** Wall time so far, ms. */
  durationMs: number;
  /** Model of each role: generation and checking, per direction. */
  models: { u2c: string; g2qa: string; verifyU2c: string; verifyG2qa: string };
  /** Prompt template version per direction (part of the cache keys). */
  templateVersions: Record<Direction, string>;
  /**
   * Every item counts once: total = accepted + rejected + unfinished, whatever way the run ended.
   * For an array input, total is its length; for another iterable, the items taken from it.
   */
  items: {
    total: number;
    accepted: number;
    rejected: number;
    unfinished: number;
    fromCache: number;
    fromInput: number;
  };
  /** The same counts split by direction, with reasons. */
  byDirection: Record<Direction, DirectionCounts>;
  /** HTTP traffic of this run: every attempt counts, retries included. */
  requests: { sent: number; succeeded: number; retries: number; failures: Record<string, number> };
  /** Chat calls needed by this run's items: live ones, and ones replayed from the cache's call journal. */
  calls: { live: number; replayed: number };
  /** Tokens and cost (USD; null when a model has no price) in total and per model. */
  usage: { inputTokens: number; outputTokens: number; costUsd: number | null; byModel: Record<string, ModelUsage> };
  /** The cache file and what was loaded from it. */
  cache: { path: string | null; loadedCalls: number; loadedItems: number; tornBytes: number };
  /** The limits set and which one was reached, if any. */
  budget: { maxRequests?: number; maxTokens?: number; exhausted: string | null };
}

function emptyCounts(): DirectionCounts {
  return {
    total: 0,
    accepted: 0,
    acceptedAfterRegeneration: 0,
    rejected: Object.fromEntries(REJECT_REASONS.map((r) => [r, 0])) as Record<RejectReason, number>,
    unfinished: Object.fromEntries(UNFINISHED_REASONS.map((r) => [r, 0])) as Record<UnfinishedReason, number>,
    fromCache: 0,
    fromInput: 0,
    formatRetries: 0,
    regenerations: 0,
  };
}

export class RunStats {
  private readonly started = Date.now();
  private finished: number | undefined;
  stoppedBy: StoppedBy = 'running';
  stopDetail: string | undefined;
  readonly byDirection: Record<Direction, DirectionCounts> = { u2c: emptyCounts(), g2qa: emptyCounts() };
  readonly requests = { sent: 0, succeeded: 0, retries: 0, failures: {} as Record<string, number> };
  readonly calls = { live: 0, replayed: 0 };
  private readonly usage = new Map<string, { requests: number; inputTokens: number; outputTokens: number }>();
  cache: CompletionReport['cache'] = { path: null, loadedCalls: 0, loadedItems: 0, tornBytes: 0 };
  budgetExhausted: string | undefined;
  /** Unfinished results for the items an early end left without one (see CompletionRun.leftover). */
  readonly leftover: CompletionResult[] = [];

  constructor(private readonly config: CompleterConfig) {}

  /**
   * Counts, as unfinished ('stopped'), the items taken but not returned (`pending`) and those of an
   * array input never taken (`all` from position `from`), so that the totals cover every item
   * however the run ended. Call it once, after `finish`.
   */
  leaveOver(pending: ReadonlyMap<number, CompletionItem>, all: readonly CompletionItem[], from: number): void {
    const detail = `the run ended (${this.stoppedBy}) before this item finished`;
    const left: [number, CompletionItem][] = [...pending].sort(([a], [b]) => a - b);
    for (let i = from; i < all.length; i++) left.push([i, all[i]]);
    for (const [index, item] of left) {
      const direction = item?.direction;
      if (direction !== 'u2c' && direction !== 'g2qa') continue; // not an item: the run failed on it, or would have
      const id = String((item.record as { id?: unknown } | undefined)?.id ?? '');
      const r: CompletionResult = {
        direction,
        id,
        index,
        ...(item.source ? { source: item.source } : {}),
        status: 'unfinished',
        reason: 'stopped',
        detail,
      };
      this.result(r);
      this.leftover.push(r);
    }
  }

  requestSent(): void {
    this.requests.sent++;
  }

  requestFailed(cause: string, willRetry: boolean): void {
    this.requests.failures[cause] = (this.requests.failures[cause] ?? 0) + 1;
    if (willRetry) this.requests.retries++;
  }

  requestSucceeded(model: string, inputTokens: number, outputTokens: number): void {
    this.requests.succeeded++;
    this.calls.live++;
    const u = this.usage.get(model) ?? { requests: 0, inputTokens: 0, outputTokens: 0 };
    u.requests++;
    u.inputTokens += inputTokens;
    u.outputTokens += outputTokens;
    this.usage.set(model, u);
  }

  callReplayed(): void {
    this.calls.replayed++;
  }

  result(r: CompletionResult): void {
    const c = this.byDirection[r.direction];
    c.total++;
    if (r.status === 'unfinished') {
      c.unfinished[r.reason]++;
      return;
    }
    if (r.origin === 'cache') c.fromCache++;
    if (r.origin === 'input') c.fromInput++;
    if (r.origin === 'llm') {
      c.formatRetries += r.stats.formatRetries;
      c.regenerations += r.stats.regenerations;
    }
    if (r.status === 'accepted') {
      c.accepted++;
      if (r.stats.regenerations > 0) c.acceptedAfterRegeneration++;
    } else c.rejected[r.reason]++;
  }

  finish(stoppedBy: Exclude<StoppedBy, 'running'>, detail?: string): void {
    if (this.finished !== undefined) return;
    this.finished = Date.now();
    this.stoppedBy = stoppedBy;
    this.stopDetail = detail;
  }

  report(): CompletionReport {
    const m = this.config.models;
    const byModel: Record<string, ModelUsage> = {};
    let inputTokens = 0;
    let outputTokens = 0;
    let cost: number | null = 0;
    for (const [model, u] of [...this.usage].sort(([a], [b]) => a.localeCompare(b))) {
      const p = priceFor(this.config, model);
      const c = p ? (u.inputTokens * p.inputPerMTok + u.outputTokens * p.outputPerMTok) / 1e6 : null;
      byModel[model] = { ...u, costUsd: c };
      inputTokens += u.inputTokens;
      outputTokens += u.outputTokens;
      cost = c === null || cost === null ? null : cost + c;
    }
    const dirs = Object.values(this.byDirection);
    const sum = (f: (d: DirectionCounts) => number) => dirs.reduce((s, d) => s + f(d), 0);
    const end = this.finished ?? Date.now();
    return {
      stoppedBy: this.stoppedBy,
      ...(this.stopDetail ? { stopDetail: this.stopDetail } : {}),
      startedAt: new Date(this.started).toISOString(),
      ...(this.finished !== undefined ? { finishedAt: new Date(this.finished).toISOString() } : {}),
      durationMs: end - this.started,
      models: { u2c: m.u2c, g2qa: m.g2qa, verifyU2c: m.verifyU2c ?? m.u2c, verifyG2qa: m.verifyG2qa ?? m.g2qa },
      templateVersions: { ...TEMPLATE_VERSIONS },
      items: {
        total: sum((d) => d.total),
        accepted: sum((d) => d.accepted),
        rejected: sum((d) => Object.values(d.rejected).reduce((a, b) => a + b, 0)),
        unfinished: sum((d) => Object.values(d.unfinished).reduce((a, b) => a + b, 0)),
        fromCache: sum((d) => d.fromCache),
        fromInput: sum((d) => d.fromInput),
      },
      byDirection: structuredClone(this.byDirection),
      requests: structuredClone(this.requests),
      calls: { ...this.calls },
      usage: { inputTokens, outputTokens, costUsd: this.usage.size ? cost : 0, byModel },
      cache: { ...this.cache },
      budget: { ...this.config.budget, exhausted: this.budgetExhausted ?? null },
    };
  }
}
