import { spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { Completer, startScriptedServer, type ScriptedServer } from '../../../src/completion/index.js';
import { config, itemIdOf, png, router, tempDir, uItem } from './helpers.js';
import { run } from '../../../src/cli/commands/complete.js';

let server: ScriptedServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

const CLI_RUN = fileURLToPath(new URL('./fixtures/cli-run.ts', import.meta.url));

/** A child process running a fixture with tsx; its TMPDIR (where tsx keeps its cache) is the test's own temp dir. */
function spawnTsx(script: string, args: string[], tmpDir: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: process.cwd(),
    env: { ...process.env, TMPDIR: tmpDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  return { child, stderr: () => err, exited };
}

/** Polls `cond` every 10 ms; fails after `ms` (under the test's limit, so the failure says what it waited for). */
async function until(cond: () => boolean, what: () => string, ms = 240_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting: ${what()}`);
    await new Promise((res) => setTimeout(res, 10));
  }
}

/** A U manifest of `ids` with their images under `dir`; returns the manifest path. */
async function writeManifest(dir: string, ids: string[]): Promise<string> {
  await mkdir(join(dir, 'img'));
  for (const id of ids) await writeFile(join(dir, 'img', `${id}.png`), png(id));
  const manifest = join(dir, 'u.jsonl');
  await writeFile(
    manifest,
    ids.map((id) => JSON.stringify({ ...uItem(id).record, image: `img/${id}.png` })).join('\n') + '\n',
  );
  return manifest;
}

describe('a run killed with SIGKILL', () => {
  it('restarted, makes no request for items the killed run had finished', async () => {
    const tmp = await tempDir();
    try {
      const r = router();
      server = await startScriptedServer(async (req) => {
        await new Promise((res) => setTimeout(res, 25));
        return r.handler(req);
      });
      const cachePath = join(tmp.dir, 'cache.jsonl');
      const ids = Array.from({ length: 12 }, (_, i) => `u${i + 1}`);
      const child = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          fileURLToPath(new URL('./fixtures/child-run.ts', import.meta.url)),
          server.url,
          cachePath,
          ids.join(','),
        ],
        {
          cwd: process.cwd(),
          env: { ...process.env, TMPDIR: tmp.dir },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let out = '';
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<NodeJS.Signals | null>((res) => child.on('exit', (_code, sig) => res(sig)));
      await new Promise<void>((res, rej) => {
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if ((out.match(/^done /gm) ?? []).length >= 3) {
            child.kill('SIGKILL');
            res();
          }
        });
        child.on('exit', () => rej(new Error(`child exited before 3 results:\n${out}\n${err}`)));
      });
      expect(await exited).toBe('SIGKILL');
      expect(out).not.toContain('finished');
      const finished = [...out.matchAll(/^done (\S+)$/gm)].map((m) => m[1]);
      expect(finished.length).toBeGreaterThanOrEqual(3);
      expect(finished.length).toBeLessThan(ids.length);
      const before = server.requests.length;

      const job = new Completer(config(server.url, { cachePath, concurrency: 2 })).run(ids.map((id) => uItem(id)));
      const results = await job.collect();
      const again = server.requests.slice(before).map((q) => itemIdOf(q));
      expect(again.filter((id) => finished.includes(id))).toEqual([]);
      expect(results.map((x) => x.id).sort()).toEqual([...ids].sort());
      expect(results.every((x) => x.status === 'accepted')).toBe(true);
      // An item can finish (outcome on disk) just before the kill without having been printed yet.
      const cached = results.filter((x) => x.status === 'accepted' && x.origin === 'cache').map((x) => x.id);
      expect(cached).toEqual(expect.arrayContaining(finished));
      expect(again.filter((id) => cached.includes(id))).toEqual([]);
      expect(job.report().cache.loadedItems).toBe(cached.length);
    } finally {
      await tmp.cleanup();
    }
  });
});

describe('pairuni complete interrupted with Ctrl-C', () => {
  it('exits 130 with the finished part written, and the rerun pays only for the rest', async () => {
    const tmp = await tempDir();
    try {
      const r = router();
      server = await startScriptedServer(async (req) => {
        await new Promise((res) => setTimeout(res, 40));
        return r.handler(req);
      });
      const ids = Array.from({ length: 10 }, (_, i) => `u${i + 1}`);
      await mkdir(join(tmp.dir, 'img'));
      for (const id of ids) await writeFile(join(tmp.dir, 'img', `${id}.png`), png(id));
      const manifest = join(tmp.dir, 'u.jsonl');
      await writeFile(
        manifest,
        ids.map((id) => JSON.stringify({ ...uItem(id).record, image: `img/${id}.png` })).join('\n') + '\n',
      );
      const out = join(tmp.dir, 'out');
      const args = [
        '--u',
        manifest,
        '--out',
        out,
        '--base-url',
        server.url,
        '--api-key',
        'k',
        '--model-u2c',
        'gen-u',
        '--model-check-u2c',
        'chk-u',
        '--concurrency',
        '2',
        '--quiet',
      ];
      const child = spawn(process.execPath, ['--import', 'tsx', CLI_RUN, ...args], {
        cwd: process.cwd(),
        env: { ...process.env, TMPDIR: tmp.dir },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
      await until(
        () => server!.requests.length >= 7,
        () => `no progress: ${err}`,
      );
      child.kill('SIGINT');
      expect(await exited).toBe(130);
      const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
      expect(report.stoppedBy).toBe('stopped');
      expect(report.items.total).toBe(ids.length);
      expect(report.items.accepted + report.items.unfinished).toBe(ids.length);
      const done = (await readFile(join(out, 'u.completed.jsonl'), 'utf8'))
        .trimEnd()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l).id as string);
      expect(done.length).toBe(report.items.accepted);
      expect(done.length).toBeGreaterThanOrEqual(2);
      expect(done.length).toBeLessThan(ids.length);

      const before = server.requests.length;
      expect(await run(args)).toBe(0);
      expect(
        server.requests
          .slice(before)
          .map(itemIdOf)
          .filter((id) => done.includes(id)),
      ).toEqual([]);
      const all = (await readFile(join(out, 'u.completed.jsonl'), 'utf8'))
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l).id);
      expect(all).toEqual(ids);
    } finally {
      await tmp.cleanup();
    }
  });
});

describe('pairuni complete: the first Ctrl-C lets requests in flight finish', () => {
  it('an interrupted run plus its rerun send exactly the requests of one uninterrupted run', async () => {
    const tmp = await tempDir();
    try {
      const r = router();
      // Slow replies: when the signal comes, `concurrency` requests are surely in flight.
      server = await startScriptedServer(async (req) => {
        await new Promise((res) => setTimeout(res, 150));
        return r.handler(req);
      });
      const ids = Array.from({ length: 12 }, (_, i) => `u${i + 1}`);
      const manifest = await writeManifest(tmp.dir, ids);
      const out = join(tmp.dir, 'out');
      const args = [
        '--u',
        manifest,
        '--out',
        out,
        '--base-url',
        server.url,
        '--api-key',
        'k',
        '--model-u2c',
        'gen-u',
        '--model-check-u2c',
        'chk-u',
        '--concurrency',
        '4',
        '--quiet',
      ];
      // One uninterrupted run: a generation and a check per item.
      const oneRun = 2 * ids.length;

      const c = spawnTsx(CLI_RUN, args, tmp.dir);
      await until(() => server!.requests.length >= 9, c.stderr);
      expect(server.inFlight).toBeGreaterThan(0);
      c.child.kill('SIGINT');
      expect(await c.exited).toBe(130);
      const first = server.requests.length;
      const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));

      expect(await run(args)).toBe(0);
      // The point: nothing was paid for twice.
      expect(server.requests.length).toBe(oneRun);
      const keys = server.requests.map((q) => `${itemIdOf(q)}/${q.model}`);
      expect(new Set(keys).size).toBe(oneRun);
      expect(first).toBeLessThan(oneRun);

      expect(c.stderr()).toContain(
        'no new request is sent; waiting for those in flight to finish and be cached (Ctrl-C again to quit at once)',
      );
      expect(report.stoppedBy).toBe('stopped');
      // Every request of the interrupted run was answered and used: none was cut off.
      expect(report.requests).toMatchObject({ sent: first, succeeded: first, retries: 0 });
      expect(report.items.total).toBe(ids.length);
      expect(report.items.accepted + report.items.unfinished).toBe(ids.length);
      expect(report.unfinished).toHaveLength(report.items.unfinished);
      const all = (await readFile(join(out, 'u.completed.jsonl'), 'utf8'))
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l).id);
      expect(all).toEqual(ids);
    } finally {
      await tmp.cleanup();
    }
  });

  it('keeps waiting for a slow request after the first Ctrl-C; the second quits at once with 130', async () => {
    const tmp = await tempDir();
    try {
      const r = router();
      // Replies that take 150 s (under the client's 180 s timeout): only the second Ctrl-C can end the run in time.
      server = await startScriptedServer(async (req) => ({ ...(r.handler(req) as object), delayMs: 150_000 }));
      const ids = ['u1', 'u2'];
      const manifest = await writeManifest(tmp.dir, ids);
      const args = [
        '--u',
        manifest,
        '--out',
        join(tmp.dir, 'out'),
        '--base-url',
        server.url,
        '--api-key',
        'k',
        '--model-u2c',
        'gen-u',
        '--model-check-u2c',
        'chk-u',
        '--concurrency',
        '2',
        '--quiet',
      ];
      const c = spawnTsx(CLI_RUN, args, tmp.dir);
      let exitedAt = 0;
      void c.exited.then(() => (exitedAt = Date.now()));
      await until(() => server!.requests.length >= 2, c.stderr);
      c.child.kill('SIGINT');
      await until(() => c.stderr().includes('Ctrl-C again to quit at once'), c.stderr);
      await new Promise((res) => setTimeout(res, 500));
      expect(exitedAt).toBe(0);
      expect(server.inFlight).toBe(2);
      const second = Date.now();
      c.child.kill('SIGINT');
      expect(await c.exited).toBe(130);
      expect(exitedAt - second).toBeLessThan(30_000);
      expect(server.requests).toHaveLength(2);
    } finally {
      await tmp.cleanup();
    }
  });
});
