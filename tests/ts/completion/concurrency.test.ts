import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  Completer,
  startScriptedServer,
  type CompletionItem,
  type ScriptedReply,
  type ScriptedServer,
} from '../../../src/completion/index.js';
import { BAD, config, gItem, itemIdOf, router, tempDir, uItem, VALID_U } from './helpers.js';

let server: ScriptedServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('concurrency', () => {
  it('N items in → exactly N outcomes out, each id once, never more than `concurrency` requests in flight', async () => {
    const tmp = await tempDir();
    try {
      const items: CompletionItem[] = [];
      const script: Record<string, ScriptedReply[]> = {};
      let expectedRequests = 0;
      const expected: Record<string, string> = {};
      for (let i = 1; i <= 40; i++) {
        const u = i % 2 === 0;
        const id = `${u ? 'u' : 'g'}${i}`;
        const gen = `${id}/${u ? 'gen-u' : 'gen-g'}`;
        const chk = `${id}/${u ? 'chk-u' : 'chk-g'}`;
        items.push(u ? uItem(id) : gItem(id));
        if (i % 11 === 0) {
          script[gen] = [{ content: null, refusal: 'no' }];
          expectedRequests += 1;
          expected[id] = 'rejected';
          continue;
        }
        expectedRequests += 2;
        expected[id] = 'accepted';
        if (i % 5 === 0) {
          script[gen] = [{ content: `not json ${i}` }];
          expectedRequests += 1;
        }
        if (i % 7 === 0) {
          script[chk] = [{ content: BAD(`problem ${i}`) }];
          expectedRequests += 2;
        }
      }
      // Pseudo-random (seeded) response times shuffle the completion order.
      let seed = 7;
      const r = router(script);
      // The first six are held until all six have arrived: six in flight at once, however slow the machine.
      let sixArrived!: () => void;
      const six = new Promise<void>((res) => (sixArrived = res));
      server = await startScriptedServer(async (req) => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        if (req.n === 6) sixArrived();
        await (req.n <= 6 ? six : new Promise((res) => setTimeout(res, seed % 13)));
        return r.handler(req);
      });
      const cachePath = join(tmp.dir, 'cache.jsonl');
      const job = new Completer(config(server.url, { concurrency: 6, cachePath })).run(items);
      const results = await job.collect();
      expect(results).toHaveLength(40);
      expect(new Set(results.map((x) => x.id)).size).toBe(40);
      expect(Object.fromEntries(results.map((x) => [x.id, x.status]))).toEqual(expected);
      expect(new Set(results.map((x) => x.index))).toEqual(new Set(items.map((_, i) => i)));
      expect(server.requests).toHaveLength(expectedRequests);
      expect(server.maxInFlight).toBe(6);
      const rep = job.report();
      expect(rep.items).toEqual({ total: 40, accepted: 37, rejected: 3, unfinished: 0, fromCache: 0, fromInput: 0 });
      expect(rep.requests.sent).toBe(expectedRequests);
      const lines = (await readFile(cachePath, 'utf8'))
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l) as { t: string; k: string });
      const outcomes = lines.filter((l) => l.t === 'item');
      expect(outcomes).toHaveLength(40);
      expect(new Set(outcomes.map((l) => l.k)).size).toBe(40);
      expect(lines.filter((l) => l.t === 'call')).toHaveLength(expectedRequests);
      // Every request of a format retry carried the failing reply back.
      const retried = server.requests.filter((q) => q.turns === 4);
      expect(retried.map((q) => itemIdOf(q)).sort()).toEqual(
        ['g15', 'g25', 'g35', 'g5', 'u10', 'u20', 'u30', 'u40'].sort(),
      );
    } finally {
      await tmp.cleanup();
    }
  });

  it('identical items in flight together share one set of calls', async () => {
    const r = router();
    server = await startScriptedServer(async (req) => {
      await new Promise((res) => setTimeout(res, 20));
      return r.handler(req);
    });
    const twin = uItem('u1');
    if (twin.direction === 'u2c') twin.record = { ...twin.record, id: 'u1-copy' };
    const results = await new Completer(config(server.url, { concurrency: 2 })).run([uItem('u1'), twin]).collect();
    expect(server.requests).toHaveLength(2);
    expect(results.map((x) => [x.id, x.status === 'accepted' && x.origin]).sort()).toEqual([
      ['u1', 'llm'],
      ['u1-copy', 'cache'],
    ]);
    const copy = results.find((x) => x.id === 'u1-copy');
    expect(copy?.status === 'accepted' && copy.direction === 'u2c' && copy.record.caption).toBe(
      JSON.parse(VALID_U).prompt,
    );
  });

  it('breaking out of the loop cancels work in flight; no request is sent afterwards', async () => {
    const r = router();
    server = await startScriptedServer(async (req) => {
      await new Promise((res) => setTimeout(res, itemIdOf(req) === 'g1' ? 5 : 30_000)); // g1 surely first
      return r.handler(req);
    });
    const items = [gItem('g1'), gItem('g2'), gItem('g3'), gItem('g4')];
    const job = new Completer(config(server.url, { concurrency: 3 })).run(items);
    for await (const x of job) {
      expect(x).toMatchObject({ id: 'g1', status: 'accepted' });
      break;
    }
    const n = server.requests.length;
    expect(job.report().stoppedBy).toBe('aborted');
    await new Promise((res) => setTimeout(res, 400));
    expect(server.requests.length).toBe(n);
    expect(server.requests.some((q) => itemIdOf(q) === 'g4')).toBe(false);
  });
});
