/**
 * One chat call against an OpenAI-compatible endpoint, with the call journal in front of it
 * (a call made before, by this or a killed run, is answered from the cache) and our own retry loop
 * behind it (the SDK's is disabled so the counts in the report are exact).
 */
import OpenAI from 'openai';
import type {
  ChatCompletion,
  ChatCompletionContentPart,
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionMessageParam,
} from 'openai/resources/chat/completions';
import { setTimeout as delay } from 'node:timers/promises';
import { AbortedError } from '../errors.js';
import type { SpendGuard } from './budget.js';
import type { CallEntry, CompletionCache } from './cache.js';
import type { CompleterConfig } from './config.js';
import { CompletionApiError, RequestRejectedError, RunStoppedError } from './errors.js';
import { hashJson } from './hash.js';
import { toDataUrl } from './images.js';
import type { RunStats } from './report.js';
import { classifyFailure, htmlMessage, htmlPage, retryDelayMs, type Failure } from './retry.js';
import type { ChatMessage } from './templates.js';
import { createLogger, logLevelOf, type LogOptions } from '../util/log.js';

/** The wait between retries; injectable so tests need not sleep. Must reject when `signal` aborts. */
export type Sleep = (ms: number, signal: AbortSignal) => Promise<void>;

export const defaultSleep: Sleep = async (ms, signal) => {
  if (ms <= 0) return;
  await delay(ms, undefined, { signal });
};

export interface ChatReply {
  text: string | null;
  refusal: string | null;
  finish: string | null;
  replayed: boolean;
}

/** Per-run state the client reports into. */
export interface CallContext {
  cache: CompletionCache;
  guard: SpendGuard;
  stats: RunStats;
  /** Hard stop: cancels requests in flight. */
  signal: AbortSignal;
  /**
   * Graceful stop: once aborted, no new request (nor retry) is sent and retry pauses are cut short,
   * while requests already in flight finish and are journalled; the call then throws RunStoppedError.
   */
  stop?: AbortSignal;
}

/**
 * `logger` / `logLevel`: what the openai client logs. Its per-request lines (openai-node logs every
 * response at info) arrive at debug; its warnings and errors at theirs.
 */
export interface ChatClientDeps extends LogOptions {
  sleep?: Sleep;
  /** Source of jitter; tests pin it. */
  random?: () => number;
  /** Custom fetch (proxies, tests). */
  fetch?: typeof fetch;
}

export class ChatClient {
  private readonly api: OpenAI;
  private readonly sleep: Sleep;
  private readonly random: () => number;

  constructor(
    private readonly config: CompleterConfig,
    deps: ChatClientDeps = {},
  ) {
    const log = createLogger(deps);
    const level = logLevelOf(deps);
    this.api = new OpenAI({
      baseURL: config.baseURL,
      apiKey: config.apiKey,
      timeout: config.timeoutMs,
      maxRetries: 0,
      ...(deps.fetch ? { fetch: deps.fetch } : {}),
      // Its info lines are ours at debug; the level it is given only spares it formatting what would be dropped.
      logger: { debug: log.debug, info: log.debug, warn: log.warn, error: log.error },
      logLevel: level === 'info' ? 'warn' : level,
    });
    this.sleep = deps.sleep ?? defaultSleep;
    this.random = deps.random ?? Math.random;
  }

  private body(model: string, messages: ChatMessage[]): ChatCompletionCreateParamsNonStreaming {
    const r = this.config.request;
    return {
      model,
      messages: messages.map(toOpenAiMessage),
      ...(r.temperature !== undefined ? { temperature: r.temperature } : {}),
      ...(r.maxCompletionTokens !== undefined ? { max_completion_tokens: r.maxCompletionTokens } : {}),
      ...(r.jsonMode ? { response_format: { type: 'json_object' as const } } : {}),
    };
  }

  /** The journal key: the request as sent, with each image replaced by its content hash. */
  callKey(model: string, messages: ChatMessage[]): string {
    const r = this.config.request;
    return hashJson({
      model,
      messages: messages.map((m) => ({
        role: m.role,
        content:
          typeof m.content === 'string'
            ? m.content
            : m.content.map((p) => (p.type === 'text' ? { text: p.text } : { image_sha256: p.image.sha256 })),
      })),
      temperature: r.temperature,
      max_completion_tokens: r.maxCompletionTokens,
      json: r.jsonMode,
    });
  }

  /**
   * Runs one request on its own signal, linked to the run's. The openai SDK adds an abort listener to
   * the signal it is given and never removes it, so handing it the run-wide signal leaked one
   * listener (and its closure) per request for the whole run.
   */
  private async withRequestSignal<T>(run: AbortSignal, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const req = new AbortController();
    const link = () => req.abort(run.reason);
    run.addEventListener('abort', link, { once: true });
    try {
      return await fn(req.signal);
    } finally {
      run.removeEventListener('abort', link);
    }
  }

  async call(model: string, messages: ChatMessage[], ctx: CallContext): Promise<ChatReply> {
    const k = this.callKey(model, messages);
    const hit = ctx.cache.getCall(k);
    if (hit) {
      ctx.stats.callReplayed();
      return { text: hit.text, refusal: hit.refusal, finish: hit.finish, replayed: true };
    }
    const body = this.body(model, messages);
    for (let retry = 0; ; retry++) {
      if (ctx.signal.aborted) throw new AbortedError();
      if (ctx.stop?.aborted) throw new RunStoppedError();
      ctx.guard.acquire();
      ctx.stats.requestSent();
      let waitMs: number;
      try {
        const res = await this.withRequestSignal(ctx.signal, (signal) => this.send(body, signal));
        const choice = res?.choices?.[0];
        if (!choice || typeof choice.message !== 'object' || choice.message === null) {
          throw new MalformedResponse('the response has no choices[0].message');
        }
        const inTok = res.usage?.prompt_tokens ?? 0;
        const outTok = res.usage?.completion_tokens ?? 0;
        ctx.guard.spend(inTok + outTok);
        ctx.stats.requestSucceeded(model, inTok, outTok);
        const entry: CallEntry = {
          t: 'call',
          k,
          model,
          text: typeof choice.message.content === 'string' ? choice.message.content : null,
          refusal: typeof choice.message.refusal === 'string' && choice.message.refusal ? choice.message.refusal : null,
          finish: choice.finish_reason ?? null,
          usage: { in: inTok, out: outTok },
        };
        await ctx.cache.putCall(entry);
        return { text: entry.text, refusal: entry.refusal, finish: entry.finish, replayed: false };
      } catch (err) {
        if (ctx.signal.aborted) throw new AbortedError('aborted', { cause: err });
        const failure: Failure =
          err instanceof HtmlReply
            ? { kind: 'fatal', cause: 'html', status: err.status, message: err.message }
            : err instanceof MalformedResponse
              ? { kind: 'retry', cause: 'malformed_response', message: err.message }
              : classifyFailure(err);
        if (failure.kind === 'abort') throw new AbortedError('aborted', { cause: err });
        // Once stopping, a failed request is left for the next run rather than sent again.
        if (failure.kind === 'retry' && ctx.stop?.aborted) {
          ctx.stats.requestFailed(failure.cause, false);
          throw new RunStoppedError();
        }
        const willRetry = failure.kind === 'retry' && retry < this.config.retry.maxRetries;
        ctx.stats.requestFailed(failure.cause, willRetry);
        if (failure.kind === 'reject') throw new RequestRejectedError(failure.message, failure.status, { cause: err });
        if (failure.kind === 'fatal') {
          throw new CompletionApiError(
            `${this.config.baseURL} (model ${model}): ${failure.message}`,
            failure.status,
            'fatal',
            { cause: err },
          );
        }
        if (!willRetry) {
          throw new CompletionApiError(
            `${this.config.baseURL} (model ${model}): ${failure.message}; gave up after ${retry + 1} attempts`,
            failure.status,
            'unavailable',
            { cause: err },
          );
        }
        waitMs = retryDelayMs(failure, retry, this.config.retry, this.random);
      }
      try {
        await this.pause(waitMs, ctx);
      } catch (e) {
        if (ctx.signal.aborted || !ctx.stop?.aborted) throw new AbortedError('aborted', { cause: e });
        throw new RunStoppedError();
      }
    }
  }

  /**
   * Sends one request and reads its body ourselves, so that a page that is not JSON (an HTML error
   * page of a proxy, a web UI at the wrong URL) can be named as such instead of failing in a JSON parser.
   */
  private async send(
    body: ChatCompletionCreateParamsNonStreaming,
    signal: AbortSignal,
  ): Promise<ChatCompletion | undefined> {
    const response = await this.api.chat.completions.create(body, { signal }).asResponse();
    const text = await response.text();
    const page = htmlPage(response.headers.get('content-type'), text);
    if (page) throw new HtmlReply(response.status, htmlMessage(response.status, page));
    if (!text.trim()) throw new MalformedResponse(`the response body is empty (status ${response.status})`);
    try {
      return JSON.parse(text) as ChatCompletion;
    } catch {
      throw new MalformedResponse(
        `the response is not JSON (status ${response.status}): ${JSON.stringify(text.slice(0, 200))}`,
      );
    }
  }

  /** A retry pause, cut short by the hard signal and by the graceful stop. */
  private async pause(ms: number, ctx: CallContext): Promise<void> {
    const stop = ctx.stop;
    if (!stop) return this.sleep(ms, ctx.signal);
    const ac = new AbortController();
    const onAbort = () => ac.abort(ctx.signal.reason);
    const onStop = () => ac.abort(stop.reason);
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    stop.addEventListener('abort', onStop, { once: true });
    try {
      if (ctx.signal.aborted) onAbort();
      else if (stop.aborted) onStop();
      await this.sleep(ms, ac.signal);
    } finally {
      ctx.signal.removeEventListener('abort', onAbort);
      stop.removeEventListener('abort', onStop);
    }
  }
}

class MalformedResponse extends Error {}

/** A 2xx answer that is an HTML page: retrying the same URL cannot turn it into an API reply. */
class HtmlReply extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function toOpenAiMessage(m: ChatMessage): ChatCompletionMessageParam {
  if (m.role === 'assistant') {
    return {
      role: 'assistant',
      content:
        typeof m.content === 'string' ? m.content : m.content.map((p) => (p.type === 'text' ? p.text : '')).join(''),
    };
  }
  if (m.role === 'system') {
    return {
      role: 'system',
      content:
        typeof m.content === 'string' ? m.content : m.content.map((p) => (p.type === 'text' ? p.text : '')).join(''),
    };
  }
  if (typeof m.content === 'string') return { role: 'user', content: m.content };
  const parts: ChatCompletionContentPart[] = m.content.map((p) =>
    p.type === 'text' ? { type: 'text', text: p.text } : { type: 'image_url', image_url: { url: toDataUrl(p.image) } },
  );
  return { role: 'user', content: parts };
}
