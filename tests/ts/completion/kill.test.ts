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
      const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./fixtures/child-run.ts', import.meta.url)), server.url, cachePath, ids.join(',')], {
        cwd: process.cwd(),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
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
      const args = ['--u', manifest, '--out', out, '--base-url', server.url, '--api-key', 'k', '--model-u2c', 'gen-u', '--model-check-u2c', 'chk-u', '--concurrency', '2', '--quiet'];
      const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./fixtures/cli-run.ts', import.meta.url)), ...args], {
        cwd: process.cwd(),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
      const t0 = Date.now();
      while (server.requests.length < 7) {
        if (Date.now() - t0 > 20_000) throw new Error(`no progress: ${err}`);
        await new Promise((res) => setTimeout(res, 10));
      }
      child.kill('SIGINT');
      expect(await exited).toBe(130);
      const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
      expect(report.stoppedBy).toBe('aborted');
      const done = (await readFile(join(out, 'u.completed.jsonl'), 'utf8')).trimEnd().split('\n').filter(Boolean).map((l) => JSON.parse(l).id as string);
      expect(done.length).toBe(report.items.accepted);
      expect(done.length).toBeGreaterThanOrEqual(2);
      expect(done.length).toBeLessThan(ids.length);

      const before = server.requests.length;
      expect(await run(args)).toBe(0);
      expect(server.requests.slice(before).map(itemIdOf).filter((id) => done.includes(id))).toEqual([]);
      const all = (await readFile(join(out, 'u.completed.jsonl'), 'utf8')).trimEnd().split('\n').map((l) => JSON.parse(l).id);
      expect(all).toEqual(ids);
    } finally {
      await tmp.cleanup();
    }
  });
});
