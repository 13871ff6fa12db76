import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AbortedError, DataError } from '../../../src/errors.js';
import {
  Completer,
  CompletionCache,
  startScriptedServer,
  COMPLETION_TEMPLATE_VERSIONS as TEMPLATE_VERSIONS,
  type CompletionResult,
  type ScriptedServer,
} from '../../../src/completion/index.js';
import { config, gItem, instantSleep, itemIdOf, OK, png, router, tempDir, uItem, VALID_U } from './helpers.js';

let server: ScriptedServer | undefined;
let tmp: Awaited<ReturnType<typeof tempDir>>;
beforeEach(async () => {
  tmp = await tempDir();
});
afterEach(async () => {
  await server?.close();
  server = undefined;
  await tmp.cleanup();
});

const keys = (s: ScriptedServer, from = 0) => s.requests.slice(from).map((r) => `${itemIdOf(r)}/${r.model}`);

async function until(cond: () => boolean, ms = 240_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('persistent cache', () => {
  it('a rerun over finished items makes zero requests and returns the same records', async () => {
    const r = router({ 'g1/chk-g': Array(3).fill({ content: '{"verdict":"inconsistent","problems":["x"]}' }) });
    server = await startScriptedServer(r.handler);
    const cachePath = join(tmp.dir, 'cache.jsonl');
    const items = [uItem('u1'), uItem('u2'), gItem('g1')];
    const first = await new Completer(config(server.url, { cachePath })).run(items).collect();
    const sent = server.requests.length;
    expect(sent).toBe(2 + 2 + 6);
    const job = new Completer(config(server.url, { cachePath })).run(items);
    const second = await job.collect();
    expect(server.requests.length).toBe(sent);
    const strip = (xs: CompletionResult[]) =>
      xs.map((x) => ({ ...x, origin: undefined })).sort((a, b) => a.id.localeCompare(b.id));
    expect(strip(second)).toEqual(strip(first));
    expect(second.every((x) => x.status !== 'unfinished' && x.origin === 'cache')).toBe(true);
    expect(job.report().items).toEqual({
      total: 3,
      accepted: 2,
      rejected: 1,
      unfinished: 0,
      fromCache: 3,
      fromInput: 0,
    });
    expect(job.report().cache).toEqual({ path: cachePath, loadedCalls: 10, loadedItems: 3, tornBytes: 0 });
    expect(job.report().usage.inputTokens).toBe(0);
  });

  it('keys on image bytes and models: a changed image or checker model is recomputed', async () => {
    const r = router();
    server = await startScriptedServer(r.handler);
    const cachePath = join(tmp.dir, 'cache.jsonl');
    await new Completer(config(server.url, { cachePath })).run([uItem('u1')]).collect();
    expect(server.requests).toHaveLength(2);
    const changed = uItem('u1');
    changed.image = { bytes: png('different pixels') };
    await new Completer(config(server.url, { cachePath })).run([changed]).collect();
    expect(server.requests).toHaveLength(4);
    const job = new Completer(
      config(server.url, { cachePath, models: { u2c: 'gen-u', g2qa: 'gen-g', verifyU2c: 'chk-u2' } }),
    ).run([uItem('u1')]);
    await job.collect();
    // A new outcome, but the unchanged generation request is answered from the call journal.
    expect(server.requests.slice(4).map((q) => q.model)).toEqual(['chk-u2']);
    expect(job.report().calls).toEqual({ live: 1, replayed: 1 });
  });

  it('keys outcomes on the template version (its unchanged requests still replay)', async () => {
    const r = router();
    server = await startScriptedServer(r.handler);
    const cachePath = join(tmp.dir, 'cache.jsonl');
    await new Completer(config(server.url, { cachePath })).run([uItem('u1')]).collect();
    const saved = TEMPLATE_VERSIONS.u2c;
    TEMPLATE_VERSIONS.u2c = 'u2c-test';
    try {
      const job = new Completer(config(server.url, { cachePath })).run([uItem('u1')]);
      const [x] = await job.collect();
      expect(x).toMatchObject({ status: 'accepted', origin: 'llm' });
      expect(job.report().calls).toEqual({ live: 0, replayed: 2 });
      expect(job.report().cache.loadedItems).toBe(1);
    } finally {
      TEMPLATE_VERSIONS.u2c = saved;
    }
    expect(server.requests).toHaveLength(2);
  });

  it('re-opens a cached rejection when a limit is raised, replaying its earlier calls for free', async () => {
    const r = router({ 'u1/chk-u': [{ content: '{"verdict":"inconsistent","problems":["dog"]}' }] });
    server = await startScriptedServer(r.handler);
    const cachePath = join(tmp.dir, 'cache.jsonl');
    const [a] = await new Completer(config(server.url, { cachePath, maxRegenerations: 0 }))
      .run([uItem('u1')])
      .collect();
    expect(a).toMatchObject({ status: 'rejected', reason: 'inconsistent' });
    const job = new Completer(config(server.url, { cachePath, maxRegenerations: 1 })).run([uItem('u1')]);
    const [b] = await job.collect();
    expect(b).toMatchObject({ status: 'accepted', origin: 'llm' });
    expect(keys(server, 2)).toEqual(['u1/gen-u', 'u1/chk-u']);
    expect(job.report().calls).toEqual({ live: 2, replayed: 2 });
  });

  it('ignores a torn last line (cut off on open) and refuses a corrupt line in the middle', async () => {
    const r = router();
    server = await startScriptedServer(r.handler);
    const cachePath = join(tmp.dir, 'cache.jsonl');
    await new Completer(config(server.url, { cachePath })).run([uItem('u1')]).collect();
    const good = await readFile(cachePath, 'utf8');
    expect(good.trimEnd().split('\n')).toHaveLength(3);
    await appendFile(cachePath, '{"t":"call","k":"abc","model":"gen');
    const job = new Completer(config(server.url, { cachePath })).run([uItem('u1')]);
    await job.collect();
    expect(server.requests).toHaveLength(2);
    expect(job.report().cache.tornBytes).toBe('{"t":"call","k":"abc","model":"gen'.length);
    expect(await readFile(cachePath, 'utf8')).toBe(good);

    const lines = good.trimEnd().split('\n');
    await writeFile(cachePath, `${lines[0]}\nnot json\n${lines.slice(1).join('\n')}\n`);
    const err = await CompletionCache.open(cachePath).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect(err).toMatchObject({ file: cachePath, row: 2 });
  });

  it('an aborted run, restarted, repeats no request of a finished item and replays a half-done one', async () => {
    const r = router({
      'u3/chk-u': [{ content: OK, delayMs: 50_000 }],
      'u4/gen-u': [{ content: VALID_U, delayMs: 50_000 }],
    });
    server = await startScriptedServer(r.handler);
    const cachePath = join(tmp.dir, 'cache.jsonl');
    const items = ['u1', 'u2', 'u3', 'u4', 'u5', 'u6'].map((id) => uItem(id));
    const ac = new AbortController();
    const job1 = new Completer(config(server.url, { cachePath, concurrency: 3 })).run(items, { signal: ac.signal });
    const got1: CompletionResult[] = [];
    const err = await (async () => {
      for await (const x of job1) {
        got1.push(x);
        if (got1.length === 2) {
          // u3 has its caption and waits on the check; u4 waits on its caption.
          await until(() => keys(server!).includes('u3/chk-u') && keys(server!).includes('u4/gen-u'));
          ac.abort();
        }
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AbortedError);
    expect(job1.report().stoppedBy).toBe('aborted');
    const done1 = got1.map((x) => x.id).sort();
    expect(done1).toEqual(['u1', 'u2']);
    const before = server.requests.length;

    const job2 = new Completer(config(server.url, { cachePath, concurrency: 3 })).run(items);
    const got2 = await job2.collect();
    const second = keys(server, before);
    expect(second.filter((k) => k.startsWith('u1/') || k.startsWith('u2/'))).toEqual([]);
    expect(second.filter((k) => k.startsWith('u3/'))).toEqual(['u3/chk-u']);
    expect(second.filter((k) => k.startsWith('u4/')).sort()).toEqual(['u4/chk-u', 'u4/gen-u']);
    expect(second).toHaveLength(1 + 2 + 2 + 2);
    expect(job2.report().calls).toEqual({ live: 7, replayed: 1 });
    expect(got2.map((x) => x.id).sort()).toEqual(['u1', 'u2', 'u3', 'u4', 'u5', 'u6']);
    expect(got2.filter((x) => x.status === 'accepted')).toHaveLength(6);
    expect(
      got2
        .filter((x) => x.status !== 'unfinished' && x.origin === 'cache')
        .map((x) => x.id)
        .sort(),
    ).toEqual(['u1', 'u2']);
  });

  it('the spend guard stops cleanly; the next run finishes the rest without repeats', async () => {
    const r = router();
    server = await startScriptedServer(r.handler);
    const cachePath = join(tmp.dir, 'cache.jsonl');
    const items = ['u1', 'u2', 'u3', 'u4', 'u5'].map((id) => uItem(id));
    const job1 = new Completer(config(server.url, { cachePath, concurrency: 1, budget: { maxRequests: 5 } })).run(
      items,
    );
    const res1 = await job1.collect();
    expect(res1.map((x) => [x.id, x.status])).toEqual([
      ['u1', 'accepted'],
      ['u2', 'accepted'],
      ['u3', 'unfinished'],
      ['u4', 'unfinished'],
      ['u5', 'unfinished'],
    ]);
    expect(res1[2]).toMatchObject({ reason: 'budget', detail: 'request budget of 5 used up' });
    const rep1 = job1.report();
    expect(rep1).toMatchObject({
      stoppedBy: 'budget',
      requests: { sent: 5 },
      budget: { maxRequests: 5, exhausted: 'request budget of 5 used up' },
    });
    expect(rep1.byDirection.u2c.unfinished).toEqual({ budget: 3, request_error: 0, stopped: 0 });
    expect(rep1.items).toMatchObject({ total: 5, accepted: 2, unfinished: 3 });
    // Nothing half-written: every line parses; 5 calls and 2 outcomes are on disk.
    const lines = (await readFile(cachePath, 'utf8'))
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { t: string });
    expect(lines.filter((l) => l.t === 'call')).toHaveLength(5);
    expect(lines.filter((l) => l.t === 'item')).toHaveLength(2);

    const job2 = new Completer(config(server.url, { cachePath, concurrency: 1 })).run(items);
    const res2 = await job2.collect();
    expect(res2.every((x) => x.status === 'accepted')).toBe(true);
    expect(keys(server, 5)).toEqual(['u3/chk-u', 'u4/gen-u', 'u4/chk-u', 'u5/gen-u', 'u5/chk-u']);
  });

  it('the token guard refuses new requests once the budget is spent', async () => {
    const r = router();
    server = await startScriptedServer(r.handler);
    // Each scripted call costs 120 tokens: after 3 calls (360 ≥ 300) no new request starts.
    const job = new Completer(config(server.url, { concurrency: 1, budget: { maxTokens: 300 } })).run([
      uItem('u1'),
      uItem('u2'),
    ]);
    const res = await job.collect();
    expect(res.map((x) => x.status)).toEqual(['accepted', 'unfinished']);
    expect(server.requests).toHaveLength(3);
    expect(job.report().budget.exhausted).toBe('token budget of 300 used up (360 spent)');
  });
});

describe('abort wiring', () => {
  it('an already-aborted signal sends nothing', async () => {
    const r = router();
    server = await startScriptedServer(r.handler);
    const { sleep } = instantSleep();
    const err = await new Completer(config(server.url), { sleep })
      .run([uItem('u1')], { signal: AbortSignal.abort() })
      .collect()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AbortedError);
    expect(server.requests).toHaveLength(0);
  });
});
