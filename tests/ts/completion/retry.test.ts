import { getEventListeners } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import {
  Completer,
  CompletionApiError,
  startScriptedServer,
  type ScriptedServer,
} from '../../../src/completion/index.js';
import { RetryConfig } from '../../../src/completion/config.js';
import { backoffMs, isRetryableStatus, retryAfterMs } from '../../../src/completion/retry.js';
import { config, instantSleep, itemIdOf, router, uItem } from './helpers.js';

let server: ScriptedServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function setup(script: Parameters<typeof router>[0], over: Parameters<typeof config>[1] = {}) {
  const r = router(script);
  server = await startScriptedServer(r.handler);
  const { sleep, delays } = instantSleep();
  return { completer: new Completer(config(server.url, over), { sleep }), calls: r.calls, delays, server };
}

describe('retry-after and backoff', () => {
  it('parses retry-after-ms first, then retry-after as seconds or an HTTP date', () => {
    const h = (o: Record<string, string>) => new Headers(o);
    expect(retryAfterMs(h({ 'retry-after-ms': '250.4', 'retry-after': '9' }))).toBe(251);
    expect(retryAfterMs(h({ 'retry-after': '2' }))).toBe(2000);
    expect(retryAfterMs(h({ 'retry-after': '0.5' }))).toBe(500);
    const now = Date.parse('2025-01-01T00:00:00Z');
    expect(retryAfterMs(h({ 'retry-after': 'Wed, 01 Jan 2025 00:00:03 GMT' }), now)).toBe(3000);
    expect(retryAfterMs(h({ 'retry-after': 'soon' }))).toBeUndefined();
    expect(retryAfterMs(h({}))).toBeUndefined();
  });

  it('backs off exponentially up to the cap, jitter within [0.5, 1) of the value', () => {
    const cfg = RetryConfig.parse({ baseDelayMs: 100, maxDelayMs: 500, jitter: false });
    expect([0, 1, 2, 3, 4].map((i) => backoffMs(i, cfg))).toEqual([100, 200, 400, 500, 500]);
    const j = RetryConfig.parse({ baseDelayMs: 100, maxDelayMs: 500, jitter: true });
    expect(backoffMs(2, j, () => 0)).toBe(200);
    expect(backoffMs(2, j, () => 0.999)).toBe(400);
  });
});

describe('transport retries against the scripted endpoint', () => {
  it('honours retry-after on 429 and retry-after-ms on 503', async () => {
    const { completer, delays, calls } = await setup({
      'u1/gen-u': [{ status: 429, headers: { 'retry-after': '2' } }],
      'u1/chk-u': [{ status: 503, headers: { 'retry-after-ms': '150' } }],
    });
    const job = completer.run([uItem('u1')]);
    const [r] = await job.collect();
    expect(r.status).toBe('accepted');
    expect(delays).toEqual([2000, 150]);
    expect(Object.fromEntries(calls)).toEqual({ 'u1/gen-u': 2, 'u1/chk-u': 2 });
    expect(job.report().requests).toEqual({ sent: 4, succeeded: 2, retries: 2, failures: { '429': 1, '503': 1 } });
  });

  it('caps a long retry-after at maxRetryAfterMs', async () => {
    const { completer, delays } = await setup(
      { 'u1/gen-u': [{ status: 429, headers: { 'retry-after': '3600' } }] },
      { retry: { maxRetries: 3, baseDelayMs: 100, maxDelayMs: 1000, maxRetryAfterMs: 5000, jitter: false } },
    );
    await completer.run([uItem('u1')]).collect();
    expect(delays).toEqual([5000]);
  });

  it('retries 500s with exponential backoff and a slow response as a timeout', async () => {
    const { completer, delays, server } = await setup(
      {
        'u1/gen-u': [{ status: 500 }, { status: 500 }],
        'u1/chk-u': [{ content: '{"verdict":"consistent","problems":[]}', delayMs: 120_000 }],
      },
      { timeoutMs: 3_000 }, // the prompt replies fit it on a busy machine; the slow one never does
    );
    const job = completer.run([uItem('u1')]);
    const [r] = await job.collect();
    expect(r.status).toBe('accepted');
    expect(delays).toEqual([100, 200, 100]);
    expect(server.requests.map((q) => `${itemIdOf(q)}/${q.model}`)).toEqual([
      'u1/gen-u',
      'u1/gen-u',
      'u1/gen-u',
      'u1/chk-u',
      'u1/chk-u',
    ]);
    expect(job.report().requests).toEqual({ sent: 5, succeeded: 2, retries: 3, failures: { '500': 2, timeout: 1 } });
  });

  it('retries a 200 response that is not a chat completion', async () => {
    const { completer, delays } = await setup({ 'u1/gen-u': [{ status: 200, body: { object: 'chat.completion' } }] });
    const job = completer.run([uItem('u1')]);
    expect((await job.collect())[0].status).toBe('accepted');
    expect(delays).toEqual([100]);
    expect(job.report().requests.failures).toEqual({ malformed_response: 1 });
  });

  it('gives up after maxRetries with CompletionApiError(unavailable); nothing is cached as final', async () => {
    const { completer, calls } = await setup({ 'u1/gen-u': Array(10).fill({ status: 502 }) });
    const job = completer.run([uItem('u1')]);
    const err = await job.collect().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CompletionApiError);
    expect(err).toMatchObject({ kind: 'unavailable', status: 502, code: 'llm_api' });
    expect((err as Error).message).toContain('gave up after 4 attempts');
    expect(calls.get('u1/gen-u')).toBe(4);
    expect(job.report()).toMatchObject({
      stoppedBy: 'error',
      requests: { sent: 4, retries: 3, failures: { '502': 4 } },
    });
  });

  it('stops at once on 401 (no retry) with a fatal CompletionApiError', async () => {
    const { completer, calls, delays } = await setup({
      'u1/gen-u': [{ status: 401, body: { error: { message: 'bad key' } } }],
    });
    const err = await completer
      .run([uItem('u1')])
      .collect()
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'CompletionApiError', kind: 'fatal', status: 401 });
    expect(calls.get('u1/gen-u')).toBe(1);
    expect(delays).toEqual([]);
  });

  it('leaves an item whose request the server rejects (400) unfinished and carries on with the rest', async () => {
    const { completer, calls } = await setup({
      'u1/gen-u': [{ status: 400, body: { error: { message: 'image too large' } } }],
    });
    const job = completer.run([uItem('u1'), uItem('u2')]);
    const res = await job.collect();
    expect(res.find((r) => r.id === 'u1')).toMatchObject({ status: 'unfinished', reason: 'request_error' });
    expect(res.find((r) => r.id === 'u2')).toMatchObject({ status: 'accepted' });
    expect(calls.get('u1/gen-u')).toBe(1);
    expect(job.report().items.unfinished).toBe(1);
    // Not cached as final: the same completer retries it on the next run.
    const again = await completer.run([uItem('u1')]).collect();
    expect(again[0]).toMatchObject({ status: 'accepted', origin: 'llm' });
    expect(calls.get('u1/gen-u')).toBe(2);
  });

  it('sends no request once aborted during a backoff pause', async () => {
    const r = router({ 'u1/gen-u': [{ status: 429, headers: { 'retry-after': '30' } }] });
    server = await startScriptedServer(r.handler);
    const ac = new AbortController();
    const completer = new Completer(config(server.url), {
      sleep: async (_ms, signal) => {
        ac.abort();
        if (signal.aborted) throw signal.reason;
      },
    });
    const err = await completer
      .run([uItem('u1')], { signal: ac.signal })
      .collect()
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'AbortedError' });
    expect(server.requests).toHaveLength(1);
  });
});

describe('which HTTP statuses are retried', () => {
  // Retried: the same request can succeed later. Permanent: it cannot (400/413/415/422 leave the
  // item unfinished and the run goes on; the rest stop the run). 501 Not Implemented is permanent.
  const RETRIED = [408, 409, 425, 429, 500, 502, 503, 504, 507, 599];
  const PERMANENT = [400, 401, 403, 404, 405, 410, 413, 415, 422, 501];

  it('isRetryableStatus states the rule', () => {
    for (const s of RETRIED) expect([s, isRetryableStatus(s)]).toEqual([s, true]);
    for (const s of PERMANENT) expect([s, isRetryableStatus(s)]).toEqual([s, false]);
  });

  it.each(RETRIED)('%i is sent again', async (status) => {
    const { completer, calls } = await setup({ 'u1/gen-u': [{ status }] });
    const job = completer.run([uItem('u1')]);
    expect((await job.collect())[0]).toMatchObject({ status: 'accepted' });
    expect(calls.get('u1/gen-u')).toBe(2);
    expect(job.report().requests).toMatchObject({ retries: 1, failures: { [String(status)]: 1 } });
  });

  it.each(PERMANENT)('%i is not sent again', async (status) => {
    const { completer, calls, delays } = await setup({ 'u1/gen-u': [{ status }] });
    const job = completer.run([uItem('u1')]);
    const res = await job.collect().catch((e: unknown) => e);
    if ([400, 413, 415, 422].includes(status))
      expect((res as unknown[])[0]).toMatchObject({ status: 'unfinished', reason: 'request_error' });
    else expect(res).toMatchObject({ name: 'CompletionApiError', kind: 'fatal', status });
    expect(calls.get('u1/gen-u')).toBe(1);
    expect(delays).toEqual([]);
    expect(job.report().requests.retries).toBe(0);
  });

  it('a refused connection is retried, then reported unavailable', async () => {
    const probe = await startScriptedServer(router().handler);
    const url = probe.url;
    await probe.close(); // nothing listens on that port any more
    const { sleep, delays } = instantSleep();
    const job = new Completer(config(url), { sleep }).run([uItem('u1')]);
    const err = await job.collect().catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'CompletionApiError', kind: 'unavailable', status: undefined });
    expect((err as Error).message).toContain('gave up after 4 attempts');
    expect(delays).toHaveLength(3);
    expect(job.report().requests).toMatchObject({ sent: 4, retries: 3, failures: { connection: 4 } });
  });
});

describe('an HTML page instead of JSON', () => {
  const PAGE =
    '<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n';
  const HINT = 'not JSON: is the base URL (--base-url) the API root';

  it('a proxy error page (text/html) is named as such; a 502 is still retried', async () => {
    const { completer, calls } = await setup(
      { 'u1/gen-u': Array(5).fill({ status: 502, headers: { 'content-type': 'text/html' }, body: PAGE }) },
      { retry: { maxRetries: 1, baseDelayMs: 100, maxDelayMs: 1_000, jitter: false } },
    );
    const err = await completer
      .run([uItem('u1')])
      .collect()
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'CompletionApiError', kind: 'unavailable', status: 502 });
    const msg = (err as Error).message;
    expect(msg).toContain('the endpoint answered with an HTML page (status 502, title "502 Bad Gateway")');
    expect(msg).toContain(HINT);
    expect(msg).not.toContain('<html>');
    expect(calls.get('u1/gen-u')).toBe(2);
  });

  it('a 404 page whose body starts with "<" (whatever its Content-Type) stops the run at once', async () => {
    const { completer, calls } = await setup({
      'u1/gen-u': [{ status: 404, body: '<html><body>Not Found</body></html>' }],
    });
    const err = await completer
      .run([uItem('u1')])
      .collect()
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'CompletionApiError', kind: 'fatal', status: 404 });
    expect((err as Error).message).toContain(`the endpoint answered with an HTML page (status 404), ${HINT}`);
    expect(calls.get('u1/gen-u')).toBe(1);
  });

  it.each([
    ['text/html; charset=utf-8', PAGE],
    ['application/json', '  <html><head><title>Sign in</title></head></html>'],
  ])('a 200 HTML page (%s) stops the run at once, not retried as malformed', async (contentType, body) => {
    const { completer, calls, delays } = await setup({
      'u1/gen-u': [{ status: 200, headers: { 'content-type': contentType }, body }],
    });
    const job = completer.run([uItem('u1')]);
    const err = await job.collect().catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'CompletionApiError', kind: 'fatal', status: 200 });
    expect((err as Error).message).toMatch(
      /the endpoint answered with an HTML page \(status 200, title "[^"]+"\), not JSON: is the base URL \(--base-url\) the API root/,
    );
    expect(calls.get('u1/gen-u')).toBe(1);
    expect(delays).toEqual([]);
    expect(job.report().requests.failures).toEqual({ html: 1 });
  });

  it('a 200 body that is neither JSON nor HTML is retried as malformed', async () => {
    const { completer, delays } = await setup({
      'u1/gen-u': [{ status: 200, headers: { 'content-type': 'text/plain' }, body: 'upstream busy' }],
    });
    const job = completer.run([uItem('u1')]);
    expect((await job.collect())[0].status).toBe('accepted');
    expect(delays).toEqual([100]);
    expect(job.report().requests.failures).toEqual({ malformed_response: 1 });
  });
});

describe('abort listeners', () => {
  it('a request leaves no listener on the run signal (the openai SDK never removes its own)', async () => {
    const { ChatClient } = await import('../../../src/completion/chat-client.js');
    const { CompletionCache } = await import('../../../src/completion/cache.js');
    const { SpendGuard } = await import('../../../src/completion/budget.js');
    const { RunStats } = await import('../../../src/completion/report.js');
    const { parseCompleterConfig } = await import('../../../src/completion/config.js');
    server = await startScriptedServer(router().handler);
    const cfg = parseCompleterConfig(config(server.url));
    const client = new ChatClient(cfg, { sleep: instantSleep().sleep });
    const run = new AbortController();
    const ctx = {
      cache: CompletionCache.memory(),
      guard: new SpendGuard(cfg.budget),
      stats: new RunStats(cfg),
      signal: run.signal,
    };
    for (let i = 0; i < 30; i++) {
      const r = await client.call('gen-u', [{ role: 'user', content: `say ${i}` }], ctx);
      expect(r.replayed).toBe(false);
    }
    expect(getEventListeners(run.signal, 'abort')).toHaveLength(0);
  });
});
