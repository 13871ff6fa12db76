/**
 * Semantic completion over a stream of items, `concurrency` at a time, yielding results as they
 * finish. Outcomes are cached per item and per call, so an interrupted run (abort, Ctrl-C, kill,
 * spend guard) loses nothing finished and a rerun pays only for what is left.
 */
import { setMaxListeners } from 'node:events';
import { AbortedError, ConfigError, DataError } from '../errors.js';
import { GenerationRecord, UnderstandingRecord } from '../data/schemas.js';
import { SpendGuard } from './budget.js';
import { CompletionCache, type ItemOutcome } from './cache.js';
import { ChatClient, type ChatClientDeps } from './chat-client.js';
import { parseCompleterConfig, type CompleterConfig, type CompleterConfigInput } from './config.js';
import { BudgetExhaustedError, RequestRejectedError, RunStoppedError } from './errors.js';
import { hashJson } from './hash.js';
import { loadImage, type LoadedImage } from './images.js';
import { completeItem } from './pipeline.js';
import { RunStats, type CompletionReport } from './report.js';
import { promptClassOf, TEMPLATE_VERSIONS } from './templates.js';
import type { CompletionItem, CompletionResult, G2qaFill, Origin, U2cFill } from './types.js';

export interface RunOptions {
  /** Aborting stops the run: requests in flight are cancelled and iteration throws AbortedError. */
  signal?: AbortSignal;
  /**
   * Aborting stops the run gracefully: no new item starts and no new request (nor retry) is sent,
   * while requests in flight finish and are cached, so a rerun pays for nothing twice. Items that
   * needed another request come back unfinished (reason 'stopped'); the iteration then ends without
   * an error and `report().stoppedBy` is 'stopped'. Items never started are in `leftover()`.
   */
  stop?: AbortSignal;
}

export type CompleterDeps = ChatClientDeps;

/**
 * One run of a Completer. Iterate it once (`for await`); `report()` may be read at any time,
 * including after the iteration threw.
 */
export class CompletionRun implements AsyncIterable<CompletionResult> {
  private used = false;

  constructor(
    private readonly start: () => AsyncGenerator<CompletionResult, void, undefined>,
    private readonly stats: RunStats,
  ) {}

  /** Counts, token usage, cost and why the run stopped, so far. */
  report(): CompletionReport {
    return this.stats.report();
  }

  /**
   * Once the iteration is over: an unfinished result (reason 'stopped') for each item it did not
   * return because the run ended early (error, abort, stop, a `break`), i.e. the items that were in
   * flight and, for an array input, those never started. Already counted in `report()`; empty after
   * a run that went through every item.
   */
  leftover(): CompletionResult[] {
    return [...this.stats.leftover];
  }

  /** Starts the run; results arrive in completion order, not input order. */
  [Symbol.asyncIterator](): AsyncIterator<CompletionResult> {
    if (this.used) throw new ConfigError('a CompletionRun can be iterated only once; call completer.run() again');
    this.used = true;
    return this.start();
  }

  /** Runs to the end and returns every result (in completion order). */
  async collect(): Promise<CompletionResult[]> {
    const out: CompletionResult[] = [];
    for await (const r of this) out.push(r);
    return out;
  }
}

export class Completer {
  /** The parsed configuration, defaults filled. */
  readonly config: CompleterConfig;
  private readonly client: ChatClient;
  private memoryCache: CompletionCache | undefined;
  private active = false;

  constructor(config: CompleterConfigInput | CompleterConfig, deps: CompleterDeps = {}) {
    this.config = parseCompleterConfig(config);
    this.client = new ChatClient(this.config, deps);
  }

  /** Completes `items` (sync or async iterable, read lazily); nothing starts until the run is iterated. */
  run(items: Iterable<CompletionItem> | AsyncIterable<CompletionItem>, opts: RunOptions = {}): CompletionRun {
    const stats = new RunStats(this.config);
    return new CompletionRun(() => this.iterate(items, opts, stats), stats);
  }

  /** Cache key of an item: direction, models, template version, and a hash of the input content including the image bytes. */
  itemKey(item: CompletionItem, image: LoadedImage | undefined): string {
    const c = this.config;
    const input =
      item.direction === 'u2c'
        ? {
            question: item.record.question,
            choices: item.record.choices,
            answer: item.record.answer,
            image: image?.sha256,
            words: c.promptWords,
          }
        : { prompt: item.record.prompt, class: promptClassOf(item.record.category), image: image?.sha256 ?? null };
    const [model, checker] =
      item.direction === 'u2c'
        ? [c.models.u2c, c.models.verifyU2c ?? c.models.u2c]
        : [c.models.g2qa, c.models.verifyG2qa ?? c.models.g2qa];
    return hashJson({
      direction: item.direction,
      model,
      checker,
      template: TEMPLATE_VERSIONS[item.direction],
      input: hashJson(input),
    });
  }

  private async *iterate(
    items: Iterable<CompletionItem> | AsyncIterable<CompletionItem>,
    opts: RunOptions,
    stats: RunStats,
  ): AsyncGenerator<CompletionResult, void, undefined> {
    const { signal } = opts;
    if (this.active) throw new ConfigError('this Completer is already running; one run at a time per cache');
    // Items taken from the source and not yet returned; with `next` and an array input, what an early end leaves over.
    const pending = new Map<number, CompletionItem>();
    let next = 0;
    if (signal?.aborted) {
      stats.finish('aborted');
      stats.leaveOver(pending, Array.isArray(items) ? items : [], 0);
      throw new AbortedError();
    }
    this.active = true;
    const ac = new AbortController();
    const stopAc = new AbortController();
    // Every in-flight request (and its retry sleep) listens on these signals: that many listeners are
    // expected, not a leak, so Node's default warning at 10 would only confuse users.
    setMaxListeners(Math.max(10, 4 * this.config.concurrency), ac.signal, stopAc.signal);
    const onAbort = () => ac.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const onStop = () => stopAc.abort(opts.stop?.reason);
    if (opts.stop?.aborted) onStop();
    else opts.stop?.addEventListener('abort', onStop, { once: true });
    const running = new Map<number, Promise<Settled>>();
    const inflight = new Map<string, Promise<ItemOutcome>>();
    const guard = new SpendGuard(this.config.budget);
    let cache: CompletionCache | undefined;
    let source: AsyncIterator<CompletionItem> | Iterator<CompletionItem> | undefined;
    let sourceDone = false;
    let stoppedSome = false;
    try {
      cache = this.config.cachePath
        ? await CompletionCache.open(this.config.cachePath)
        : (this.memoryCache ??= CompletionCache.memory());
      stats.cache = {
        path: cache.path ?? null,
        loadedCalls: cache.loadInfo.calls,
        loadedItems: cache.loadInfo.items,
        tornBytes: cache.loadInfo.tornBytes,
      };
      const ctx = { cache, guard, stats, signal: ac.signal, stop: stopAc.signal };
      source = Symbol.asyncIterator in items ? items[Symbol.asyncIterator]() : items[Symbol.iterator]();
      for (;;) {
        while (!sourceDone && running.size < this.config.concurrency && !ac.signal.aborted && !stopAc.signal.aborted) {
          const n = await source.next();
          if (n.done) {
            sourceDone = true;
            break;
          }
          const index = next++;
          pending.set(index, n.value);
          running.set(
            index,
            this.process(n.value, index, ctx, inflight).then(
              (result) => ({ index, result }),
              (error: unknown) => ({ index, error }),
            ),
          );
        }
        if (ac.signal.aborted) throw new AbortedError();
        if (running.size === 0) break;
        const s = await Promise.race(running.values());
        running.delete(s.index);
        if ('error' in s) throw s.error;
        pending.delete(s.index);
        if (s.result.status === 'unfinished' && s.result.reason === 'stopped') stoppedSome = true;
        stats.result(s.result);
        yield s.result;
      }
      if (guard.exhausted) stats.budgetExhausted = guard.exhausted;
      if (stopAc.signal.aborted && (stoppedSome || !sourceDone))
        stats.finish('stopped', 'asked to stop: no new request was started, those in flight were finished');
      else if (guard.exhausted) stats.finish('budget', guard.exhausted);
      else stats.finish('completed');
    } catch (e) {
      if (guard.exhausted) stats.budgetExhausted = guard.exhausted;
      if (e instanceof AbortedError || ac.signal.aborted) {
        stats.finish('aborted');
        throw e instanceof AbortedError ? e : new AbortedError('aborted', { cause: e });
      }
      stats.finish('error', e instanceof Error ? e.message : String(e));
      throw e;
    } finally {
      // Also reached when the consumer breaks out of `for await`: cancel what is in flight and
      // wait for it, so no request or cache write outlives the run.
      ac.abort();
      await Promise.allSettled(running.values());
      if (!sourceDone) await source?.return?.();
      if (cache && cache !== this.memoryCache) await cache.close();
      signal?.removeEventListener('abort', onAbort);
      opts.stop?.removeEventListener('abort', onStop);
      if (stats.stoppedBy === 'running') stats.finish('aborted', 'the consumer stopped iterating');
      stats.leaveOver(pending, Array.isArray(items) ? items : [], next);
      this.active = false;
    }
  }

  private async process(
    item: CompletionItem,
    index: number,
    ctx: { cache: CompletionCache; guard: SpendGuard; stats: RunStats; signal: AbortSignal },
    inflight: Map<string, Promise<ItemOutcome>>,
  ): Promise<CompletionResult> {
    validateItem(item);
    const base = {
      direction: item.direction,
      id: item.record.id,
      index,
      ...(item.source ? { source: item.source } : {}),
    };
    if (this.config.keepExisting && hasCompletion(item)) {
      const stats = zeroStats();
      return item.direction === 'u2c'
        ? { ...base, direction: 'u2c', status: 'accepted', record: item.record, origin: 'input', stats }
        : { ...base, direction: 'g2qa', status: 'accepted', record: item.record, origin: 'input', stats };
    }
    const needsImage = item.direction === 'u2c' || this.config.g2qaWithImage;
    const image = needsImage ? await loadImage(item.image, item.source) : undefined;
    const key = this.itemKey(item, image);
    const cached = ctx.cache.getItem(key);
    if (cached && !this.reopens(cached.outcome)) return this.toResult(item, base, cached.outcome, 'cache');

    try {
      const shared = inflight.get(key);
      if (shared) return this.toResult(item, base, await shared, 'cache');
      const p =
        item.direction === 'u2c'
          ? completeItem({ direction: 'u2c', record: item.record, image: image! }, this.client, this.config, ctx)
          : completeItem({ direction: 'g2qa', record: item.record, image }, this.client, this.config, ctx);
      inflight.set(key, p);
      let outcome: ItemOutcome;
      try {
        outcome = await p;
      } finally {
        inflight.delete(key);
      }
      await ctx.cache.putItem({ t: 'item', k: key, direction: item.direction, outcome });
      return this.toResult(item, base, outcome, 'llm');
    } catch (e) {
      if (e instanceof BudgetExhaustedError)
        return { ...base, status: 'unfinished', reason: 'budget', detail: e.message };
      if (e instanceof RequestRejectedError)
        return { ...base, status: 'unfinished', reason: 'request_error', detail: e.message };
      if (e instanceof RunStoppedError) return { ...base, status: 'unfinished', reason: 'stopped', detail: e.message };
      throw e;
    }
  }

  /** A cached rejection made under lower limits than today's is tried again (its calls replay for free). */
  private reopens(o: ItemOutcome): boolean {
    if (o.status !== 'rejected') return false;
    if (o.reason === 'inconsistent') return o.limits.maxRegenerations < this.config.maxRegenerations;
    if (o.reason === 'invalid_output' || o.reason === 'checker_invalid_output')
      return o.limits.maxFormatRetries < this.config.maxFormatRetries;
    return false;
  }

  private toResult(
    item: CompletionItem,
    base: { direction: CompletionItem['direction']; id: string; index: number; source?: CompletionItem['source'] },
    o: ItemOutcome,
    origin: Origin,
  ): CompletionResult {
    if (o.status === 'rejected')
      return { ...base, status: 'rejected', reason: o.reason, detail: o.detail, origin, stats: o.stats };
    if (item.direction === 'u2c') {
      const record = { ...item.record, ...(o.fill as U2cFill) };
      return { ...base, direction: 'u2c', status: 'accepted', record, origin, stats: o.stats };
    }
    const record = { ...item.record, ...(o.fill as G2qaFill) };
    return { ...base, direction: 'g2qa', status: 'accepted', record, origin, stats: o.stats };
  }
}

type Settled = { index: number; result: CompletionResult } | { index: number; error: unknown };

function zeroStats() {
  return { calls: 0, replayedCalls: 0, formatRetries: 0, regenerations: 0 };
}

function hasCompletion(item: CompletionItem): boolean {
  if (item.direction === 'u2c') return Boolean(item.record.caption?.trim());
  const r = item.record;
  return Boolean(r.question?.trim() && r.choices?.length && r.answer);
}

function validateItem(item: CompletionItem): void {
  const { file, row } = item.source ?? {};
  const at = file ? `${file}${row !== undefined ? `:${row}` : ''}: ` : '';
  const schema =
    item.direction === 'u2c' ? UnderstandingRecord : item.direction === 'g2qa' ? GenerationRecord : undefined;
  if (!schema)
    throw new DataError(
      `${at}unknown completion direction ${JSON.stringify((item as { direction?: unknown }).direction)}`,
      file,
      row,
    );
  const r = schema.safeParse(item.record);
  if (!r.success)
    throw new DataError(
      `${at}invalid ${item.direction === 'u2c' ? 'understanding' : 'generation'} record: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
      file,
      row,
    );
  if (item.direction === 'u2c') {
    const k = item.record.answer.charCodeAt(0) - 65;
    if (k >= item.record.choices.length) {
      throw new DataError(
        `${at}answer ${item.record.answer} names no choice (there are ${item.record.choices.length})`,
        file,
        row,
      );
    }
  }
}
