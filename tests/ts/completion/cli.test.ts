import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, DataError } from '../../../src/errors.js';
import { GenerationRecord, UnderstandingRecord } from '../../../src/data/schemas.js';
import { run, summary } from '../../../src/cli/commands/complete.js';
import { startScriptedServer, type ScriptedServer } from '../../../src/completion/index.js';
import { BAD, itemIdOf, png, router, tempDir } from './helpers.js';

let server: ScriptedServer | undefined;
let tmp: Awaited<ReturnType<typeof tempDir>>;
let data: string;
let out: string;
const savedKey = process.env.OPENAI_API_KEY;

beforeEach(async () => {
  tmp = await tempDir();
  data = join(tmp.dir, 'data');
  out = join(tmp.dir, 'out');
  await mkdir(join(data, 'img'), { recursive: true });
  const u = ['u1', 'u2', 'u3'].map((id) => ({
    id,
    image: `img/${id}.png`,
    question: `How many cats sit on the sofa? [${id}]`,
    choices: ['one', 'two', 'three', 'four'],
    answer: 'B',
  }));
  const g = ['g1', 'g2'].map((id) => ({
    id,
    image: `img/${id}.png`,
    prompt: `A red apple left of a blue mug [${id}]`,
    category: 'two object',
  }));
  for (const r of [...u, ...g]) await writeFile(join(data, r.image), png(r.id));
  await writeFile(join(data, 'u.jsonl'), u.map((r) => JSON.stringify(r)).join('\n') + '\n');
  await writeFile(join(data, 'g.jsonl'), g.map((r) => JSON.stringify(r)).join('\n') + '\n');
  process.env.OPENAI_API_KEY = 'env-key';
});

afterEach(async () => {
  await server?.close();
  server = undefined;
  await tmp.cleanup();
  if (savedKey === undefined) delete process.env.OPENAI_API_KEY;
  else process.env.OPENAI_API_KEY = savedKey;
});

const baseArgs = (url: string) => [
  '--u',
  join(data, 'u.jsonl'),
  '--g',
  join(data, 'g.jsonl'),
  '--out',
  out,
  '--base-url',
  url,
  '--model-u2c',
  'gen-u',
  '--model-g2qa',
  'gen-g',
  '--model-check-u2c',
  'chk-u',
  '--model-check-g2qa',
  'chk-g',
  '--concurrency',
  '2',
  '--max-regenerations',
  '1',
  '--price-in',
  '2',
  '--price-out',
  '8',
  '--quiet',
];

const jsonl = async (p: string) =>
  (await readFile(p, 'utf8'))
    .trimEnd()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('pairuni complete', () => {
  it('has a summary line', () => {
    expect(summary.length).toBeGreaterThan(10);
  });

  it('writes completed manifests, rejections and a report; a rerun is served from the cache', async () => {
    const r = router({ 'u3/chk-u': Array(2).fill({ content: BAD('the prompt shows three cats') }) });
    server = await startScriptedServer(r.handler);
    expect(await run(baseArgs(server.url))).toBe(0);
    expect(server.requests[0].headers.authorization).toBe('Bearer env-key');
    expect(server.requests).toHaveLength(2 + 2 + 4 + 2 + 2);

    const u = await jsonl(join(out, 'u.completed.jsonl'));
    expect(u.map((x) => x.id)).toEqual(['u1', 'u2']);
    for (const x of u) expect(UnderstandingRecord.parse(x).caption).toMatch(/^Two tabby cats/);
    expect(u[0].image).toBe('../data/img/u1.png');
    const g = await jsonl(join(out, 'g.completed.jsonl'));
    expect(g.map((x) => x.id)).toEqual(['g1', 'g2']);
    for (const x of g) expect(GenerationRecord.parse(x)).toMatchObject({ answer: 'A', choices: expect.any(Array) });
    expect(g[1].image).toBe('../data/img/g2.png');
    expect(await jsonl(join(out, 'rejections.jsonl'))).toEqual([
      {
        direction: 'u2c',
        id: 'u3',
        reason: 'inconsistent',
        detail: 'checker: the prompt shows three cats (after 2 drafts)',
        file: join(data, 'u.jsonl'),
        row: 3,
      },
    ]);
    const rep = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    expect(rep).toMatchObject({
      stoppedBy: 'completed',
      items: { total: 5, accepted: 4, rejected: 1, unfinished: 0, fromCache: 0 },
      requests: { sent: 12, retries: 0 },
      usage: { inputTokens: 1200, outputTokens: 240 },
      unfinished: [],
    });
    expect(rep.usage.costUsd).toBeCloseTo((1200 * 2 + 240 * 8) / 1e6, 10);
    expect(rep.byDirection.u2c).toMatchObject({ accepted: 2, regenerations: 1, rejected: { inconsistent: 1 } });

    expect(await run(baseArgs(server.url))).toBe(0);
    expect(server.requests).toHaveLength(12);
    const rep2 = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    expect(rep2.items).toMatchObject({ total: 5, accepted: 4, rejected: 1, fromCache: 5 });
    expect(rep2.requests.sent).toBe(0);
    expect((await jsonl(join(out, 'u.completed.jsonl'))).map((x) => x.id)).toEqual(['u1', 'u2']);
  });

  it('exits 3 with the spend guard hit and writes what is finished', async () => {
    server = await startScriptedServer(router().handler);
    const code = await run([...baseArgs(server.url), '--concurrency', '1', '--max-requests', '3']);
    expect(code).toBe(3);
    expect(server.requests).toHaveLength(3);
    const rep = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    expect(rep).toMatchObject({ stoppedBy: 'budget', items: { total: 5, accepted: 1, unfinished: 4 } });
    expect(rep.unfinished.map((x: { id: string }) => x.id)).toEqual(['u2', 'u3', 'g1', 'g2']);
    expect((await jsonl(join(out, 'u.completed.jsonl'))).map((x) => x.id)).toEqual(['u1']);
  });

  it('names the file and row of a missing image before sending anything', async () => {
    server = await startScriptedServer(router().handler);
    const file = join(data, 'u.jsonl');
    const lines = (await readFile(file, 'utf8')).trimEnd().split('\n');
    lines[1] = JSON.stringify({ ...JSON.parse(lines[1]), image: 'img/missing.png' });
    await writeFile(file, lines.join('\n') + '\n');
    const err = await run(baseArgs(server.url)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect(err).toMatchObject({ file, row: 2 });
    expect((err as Error).message).toBe(`${file}:2: image ${join(data, 'img/missing.png')} is not found`);
    expect(server.requests).toHaveLength(0);
  });

  it('rejects a malformed manifest row and bad flags with typed errors', async () => {
    server = await startScriptedServer(router().handler);
    await writeFile(
      join(data, 'g.jsonl'),
      '{"id":"g1","image":"img/g1.png","prompt":"x"}\n{"id":"g2","image":"img/g2.png"}\n',
    );
    await expect(run(baseArgs(server.url))).rejects.toMatchObject({ name: 'DataError', row: 2 });
    await expect(run(['--u', join(data, 'u.jsonl'), '--out', out, '--base-url', server.url])).rejects.toBeInstanceOf(
      ConfigError,
    );
    await expect(run([...baseArgs(server.url), '--concurrency', 'many'])).rejects.toThrow(
      '--concurrency must be a number',
    );
    await expect(run(['--bogus'])).rejects.toMatchObject({ code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION' }); // src/cli/index.ts words it
    expect(server.requests.map(itemIdOf)).toEqual([]);
  });

  it('without an API key, says to set OPENAI_API_KEY or pass --api-key, before sending anything', async () => {
    server = await startScriptedServer(router().handler);
    delete process.env.OPENAI_API_KEY;
    const err = await run(baseArgs(server.url)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toContain('OPENAI_API_KEY');
    expect((err as Error).message).toContain('--api-key');
    process.env.OPENAI_API_KEY = '';
    await expect(run(baseArgs(server.url))).rejects.toThrow(/OPENAI_API_KEY.*--api-key/);
    expect(server.requests).toHaveLength(0);
  });

  it('after a fatal error, report.json counts every item: total, finished and unfinished', async () => {
    server = await startScriptedServer(
      router({ 'u2/gen-u': [{ status: 403, body: { error: { message: 'model not allowed' } } }] }).handler,
    );
    const err = await run([...baseArgs(server.url), '--concurrency', '1']).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'CompletionApiError', kind: 'fatal', status: 403 });
    const rep = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    expect(rep).toMatchObject({ stoppedBy: 'error', items: { total: 5, accepted: 1, rejected: 0, unfinished: 4 } });
    expect(rep.unfinished.map((x: { id: string; reason: string }) => [x.id, x.reason])).toEqual([
      ['u2', 'stopped'],
      ['u3', 'stopped'],
      ['g1', 'stopped'],
      ['g2', 'stopped'],
    ]);
    expect((await jsonl(join(out, 'u.completed.jsonl'))).map((x) => x.id)).toEqual(['u1']);
  });

  it('takes settings from --config, with flags overriding it', async () => {
    server = await startScriptedServer(router().handler);
    const cfgPath = join(tmp.dir, 'complete.json');
    await writeFile(
      cfgPath,
      JSON.stringify({
        baseURL: server.url,
        apiKey: 'file-key',
        models: { u2c: 'gen-u', g2qa: 'gen-g', verifyU2c: 'chk-u', verifyG2qa: 'chk-g' },
        concurrency: 1,
        budget: { maxRequests: 100 },
      }),
    );
    expect(
      await run(['--u', join(data, 'u.jsonl'), '--out', out, '--config', cfgPath, '--max-requests', '2', '--quiet']),
    ).toBe(3);
    expect(server.requests).toHaveLength(2);
    expect(server.requests[0].headers.authorization).toBe('Bearer file-key');
    const rep = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    expect(rep.budget).toMatchObject({ maxRequests: 2 });
    await writeFile(
      cfgPath,
      JSON.stringify({ baseURL: server.url, apiKey: 'k', models: { u2c: 'a', g2qa: 'b' }, concurency: 2 }),
    );
    await expect(run(['--u', join(data, 'u.jsonl'), '--out', out, '--config', cfgPath])).rejects.toThrow(
      /Unrecognized key: "concurency"/,
    );
  });
});
