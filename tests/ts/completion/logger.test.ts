/**
 * The completer's `logger` / `logLevel`: what the openai client logs reaches the given logger (its
 * per-request lines at debug), and nothing reaches stdout/stderr.
 */
import { afterEach, expect, it, vi } from 'vitest';
import { Completer, startScriptedServer, type ScriptedServer } from '../../../src/completion/index.js';
import type { Logger, LogLevel } from '../../../src/util/log.js';
import { config, instantSleep, router, uItem } from './helpers.js';

let server: ScriptedServer | undefined;
afterEach(async () => {
  vi.restoreAllMocks();
  await server?.close();
  server = undefined;
});

async function runOne(logLevel: LogLevel) {
  server = await startScriptedServer(router().handler);
  const got: Array<{ level: string; message: string }> = [];
  const at = (level: string) => (message: string) => void got.push({ level, message });
  const logger: Logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
  const stdout = vi.spyOn(process.stdout, 'write');
  const stderr = vi.spyOn(process.stderr, 'write');
  const completer = new Completer(config(server.url), { sleep: instantSleep().sleep, logger, logLevel });
  const res = await completer.run([uItem('u1')]).collect();
  const writes = [...stdout.mock.calls, ...stderr.mock.calls].map((c) => String(c[0]));
  return { got, res, writes };
}

it("the openai client's line per request arrives at debug", async () => {
  const { got, res, writes } = await runOne('debug');
  expect(res.map((r) => r.status)).toEqual(['accepted']);
  expect(writes).toEqual([]);
  const done = got.filter((g) => / post \S+\/chat\/completions succeeded with status 200 in \d+ms$/i.test(g.message));
  expect(done.map((g) => g.level)).toEqual(['debug', 'debug']); // the generator's request and the checker's
  expect(got.every((g) => g.level === 'debug')).toBe(true);
});

it("at 'info' a successful run logs nothing", async () => {
  const { got, res, writes } = await runOne('info');
  expect(res.map((r) => r.status)).toEqual(['accepted']);
  expect(got).toEqual([]);
  expect(writes).toEqual([]);
});
