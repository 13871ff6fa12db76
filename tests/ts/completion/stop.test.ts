/** How a run ends early: graceful stop, hard abort, fatal error; the report counts every item whatever the end. */
import { afterEach, describe, expect, it } from 'vitest';
import { AbortedError } from '../../../src/errors.js';
import {
  Completer,
  CompletionApiError,
  startScriptedServer,
  type CompletionResult,
  type ScriptedServer,
} from '../../../src/completion/index.js';
import { config, gItem, itemIdOf, router, uItem } from './helpers.js';

let server: ScriptedServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

const keys = (s: ScriptedServer) => s.requests.map((q) => `${itemIdOf(q)}/${q.model}`);

describe('RunOptions.stop (graceful stop)', () => {
  it('starts nothing new, lets requests in flight finish into the cache; the next run sends none of them again', async () => {
    const r = router();
    const stop = new AbortController();
    server = await startScriptedServer(async (req) => {
      // Stopped while this request (and another) is in flight.
      if (req.n === 5) stop.abort();
      await new Promise((res) => setTimeout(res, 100));
      return r.handler(req);
    });
    const items = ['u1', 'u2', 'u3', 'u4', 'u5', 'u6'].map((id) => uItem(id));
    const completer = new Completer(config(server.url, { concurrency: 2 }));
    const job = completer.run(items, { stop: stop.signal });
    const got = await job.collect();
    expect(stop.signal.aborted).toBe(true);
    expect(server.inFlight).toBe(0);
    const sent = server.requests.length;
    const rep = job.report();
    expect(rep.stoppedBy).toBe('stopped');
    // Every request sent was answered and used (none cancelled).
    expect(rep.requests).toMatchObject({ sent, succeeded: sent, retries: 0 });
    expect(rep.calls.live).toBe(sent);
    const unfinished = got.filter((x) => x.status === 'unfinished');
    expect(unfinished.length).toBeGreaterThan(0);
    for (const x of unfinished) expect(x).toMatchObject({ reason: 'stopped' });
    const left = job.leftover();
    expect(left.map((x) => x.index)).toEqual(
      Array.from({ length: items.length - got.length }, (_, i) => got.length + i),
    );
    expect(rep.items).toMatchObject({
      total: 6,
      accepted: got.length - unfinished.length,
      unfinished: unfinished.length + left.length,
    });
    expect(rep.byDirection.u2c.unfinished.stopped).toBe(unfinished.length + left.length);

    const again = await completer.run(items).collect();
    expect(again.every((x) => x.status === 'accepted')).toBe(true);
    // 2 calls per item in all, each sent once.
    expect(server.requests).toHaveLength(12);
    expect(new Set(keys(server)).size).toBe(12);
  });

  it('cuts a retry pause short and sends no retry', async () => {
    const r = router({ 'u1/gen-u': [{ status: 429, headers: { 'retry-after': '600' } }] });
    server = await startScriptedServer(r.handler);
    const stop = new AbortController();
    // The real sleep: only the stop can end this 10 min pause in time.
    const job = new Completer(config(server.url, { retry: { maxRetries: 3, maxRetryAfterMs: 900_000 } })).run(
      [uItem('u1')],
      { stop: stop.signal },
    );
    const t0 = Date.now();
    setTimeout(() => stop.abort(), 200);
    const res = await job.collect();
    expect(Date.now() - t0).toBeLessThan(60_000);
    expect(res).toEqual([expect.objectContaining({ id: 'u1', status: 'unfinished', reason: 'stopped' })]);
    expect(server.requests).toHaveLength(1);
    expect(job.report()).toMatchObject({ stoppedBy: 'stopped', items: { total: 1, unfinished: 1 } });
  });

  it('a stop after everything finished changes nothing', async () => {
    server = await startScriptedServer(router().handler);
    const stop = new AbortController();
    const job = new Completer(config(server.url)).run([uItem('u1')], { stop: stop.signal });
    const res = await job.collect();
    stop.abort();
    expect(res[0]).toMatchObject({ status: 'accepted' });
    expect(job.report().stoppedBy).toBe('completed');
    expect(job.leftover()).toEqual([]);
  });
});

describe('report totals of a run that ends early', () => {
  it('after a fatal error: total is every item, the unfinished ones are counted and listed', async () => {
    const r = router({ 'u2/gen-u': [{ status: 401, body: { error: { message: 'bad key' } } }] });
    server = await startScriptedServer(r.handler);
    const items = [uItem('u1'), uItem('u2'), uItem('u3'), gItem('g1'), gItem('g2')];
    const job = new Completer(config(server.url, { concurrency: 1 })).run(items);
    const got: CompletionResult[] = [];
    const err = await (async () => {
      for await (const x of job) got.push(x);
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CompletionApiError);
    expect(got.map((x) => x.id)).toEqual(['u1']);
    const rep = job.report();
    expect(rep.stoppedBy).toBe('error');
    expect(rep.items).toMatchObject({ total: 5, accepted: 1, rejected: 0, unfinished: 4 });
    expect(rep.byDirection.u2c).toMatchObject({ total: 3, accepted: 1, unfinished: { stopped: 2 } });
    expect(rep.byDirection.g2qa).toMatchObject({ total: 2, unfinished: { stopped: 2 } });
    expect(job.leftover().map((x) => [x.id, x.index, x.status])).toEqual([
      ['u2', 1, 'unfinished'],
      ['u3', 2, 'unfinished'],
      ['g1', 3, 'unfinished'],
      ['g2', 4, 'unfinished'],
    ]);
  });

  it('after a hard abort, and with a signal already aborted', async () => {
    const r = router();
    server = await startScriptedServer(async (req) => {
      await new Promise((res) => setTimeout(res, itemIdOf(req) === 'u1' ? 5 : 30_000));
      return r.handler(req);
    });
    const items = ['u1', 'u2', 'u3', 'u4'].map((id) => uItem(id));
    const ac = new AbortController();
    const job = new Completer(config(server.url, { concurrency: 2 })).run(items, { signal: ac.signal });
    const err = await (async () => {
      for await (const x of job) {
        expect(x.id).toBe('u1');
        ac.abort();
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AbortedError);
    expect(job.report()).toMatchObject({ stoppedBy: 'aborted', items: { total: 4, accepted: 1, unfinished: 3 } });

    const pre = new Completer(config(server.url)).run(items, { signal: AbortSignal.abort() });
    await expect(pre.collect()).rejects.toBeInstanceOf(AbortedError);
    expect(pre.report().items).toMatchObject({ total: 4, unfinished: 4 });
  });
});
