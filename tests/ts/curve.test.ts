/**
 * Remote ranks: tcp:// needs CURVE; the controller's ZAP handler admits allow-listed keys only.
 * Real pyzmq ranks (`python -m pairuni_sidecar --curve-key ... --curve-server ...`) connect over
 * loopback: an allow-listed key gets in, an unknown key and a plaintext client are refused and logged.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run as keysCli } from '../../src/cli/commands/keys.js';
import { ConfigError, RanksMissingError } from '../../src/errors.js';
import { type AuthEvent, readKeyPair, resolvePython, Sidecar, writeKeyPair } from '../../src/sidecar/index.js';
import { z85 } from '../../src/sidecar/curve.js';
import { IMPORT_LOG, untilImported } from './_rank-ready.js';

let dir: string;
const children: ChildProcess[] = [];
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'pairuni-curve-'));
  writeKeyPair(join(dir, 'controller'));
  writeKeyPair(join(dir, 'good'));
  writeKeyPair(join(dir, 'stranger'));
});
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const port = () => 20000 + Math.floor(Math.random() * 20000);
/** Starts a real rank connecting to `endpoint`; resolves once it is ready to connect (`untilImported`). */
async function rank(endpoint: string, curve: string[]): Promise<void> {
  const c = spawn(
    resolvePython(),
    [...IMPORT_LOG, '-m', 'pairuni_sidecar', '--connect', endpoint, '--wait-controller', '300', ...curve],
    {
      env: { ...process.env, PYTHONPATH: join(process.cwd(), 'python_sidecar') } as Record<string, string>,
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  children.push(c);
  await untilImported(c, `the rank for ${endpoint}`);
}
const curveArgs = (who: string) => [
  '--curve-key',
  join(dir, `${who}.key`),
  '--curve-server',
  join(dir, 'controller.pub'),
];

describe('keys', () => {
  it('z85 encodes as ZeroMQ RFC 32 (its test vector)', () => {
    expect(z85(Uint8Array.from([0x86, 0x4f, 0xd2, 0x6f, 0xb5, 0x59, 0xf7, 0x5b]))).toBe('HelloWorld');
  });

  it('pairuni keys writes a 0600 key file and a public key, and never overwrites', async () => {
    const base = join(dir, 'cli-host');
    expect(await keysCli([base])).toBe(0);
    expect(statSync(`${base}.key`).mode & 0o777).toBe(0o600);
    const kp = readKeyPair(`${base}.key`);
    expect(readFileSync(`${base}.pub`, 'utf8').trim()).toBe(kp.publicKey);
    expect(kp.publicKey).toHaveLength(40);
    expect(() => writeKeyPair(base)).toThrow(/exists: refusing to overwrite/);
  });

  it('tcp:// without CURVE is refused unless plaintext is asked for', async () => {
    await expect(Sidecar.attach({ endpoint: `tcp://127.0.0.1:${port()}`, timeoutMs: 10 })).rejects.toThrow(ConfigError);
    await expect(Sidecar.attach({ endpoint: `tcp://127.0.0.1:${port()}`, timeoutMs: 10 })).rejects.toThrow(
      /need CURVE/,
    );
  });
});

describe('CURVE + ZAP allow-list over loopback', () => {
  const attach = (endpoint: string, events: AuthEvent[], timeoutMs: number) =>
    Sidecar.attach({
      endpoint,
      timeoutMs,
      curve: { key: join(dir, 'controller.key'), allow: [join(dir, 'good.pub')] },
      onAuth: (ev) => events.push(ev as AuthEvent),
    });

  it('lets an allow-listed key in and refuses an unknown key and a plaintext client (logged)', async () => {
    const [good, stranger, plain] = [port(), port(), port()].map((p) => `tcp://127.0.0.1:${p}`);
    const ev = { good: [] as AuthEvent[], stranger: [] as AuthEvent[], plain: [] as AuthEvent[] };
    await Promise.all([rank(good, curveArgs('good')), rank(stranger, curveArgs('stranger')), rank(plain, [])]);
    // The ranks are up and reconnect every 100 ms: 20 s to be refused is far more than a handshake needs.
    const attaching = [
      attach(good, ev.good, 40_000),
      attach(stranger, ev.stranger, 20_000),
      attach(plain, ev.plain, 20_000),
    ];
    const [ok, unknown, plaintext] = await Promise.allSettled(attaching);

    expect(ok.status).toBe('fulfilled');
    const sc = (ok as PromiseFulfilledResult<Sidecar>).value;
    try {
      expect((await sc.call('echo', { hi: 1 })).args).toEqual({ hi: 1 });
      expect(ev.good.some((e) => e.allowed && e.key === readKeyPair(join(dir, 'good.key')).publicKey)).toBe(true);
    } finally {
      await sc.close();
    }

    expect(unknown.status).toBe('rejected');
    expect((unknown as PromiseRejectedResult).reason).toBeInstanceOf(RanksMissingError);
    const strangerKey = readKeyPair(join(dir, 'stranger.key')).publicKey;
    expect(ev.stranger.length).toBeGreaterThan(0);
    expect(ev.stranger.every((e) => !e.allowed && e.key === strangerKey && e.mechanism === 'CURVE')).toBe(true);

    expect(plaintext.status).toBe('rejected');
    expect((plaintext as PromiseRejectedResult).reason).toBeInstanceOf(RanksMissingError);
    expect(ev.plain.length).toBeGreaterThan(0);
    expect(ev.plain.every((e) => !e.allowed)).toBe(true);
  });
});
