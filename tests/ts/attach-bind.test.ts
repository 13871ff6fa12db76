import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import * as zmq from 'zeromq';
import { Sidecar, SidecarStartError } from '../../src/index.js';

/** A tcp port the OS just handed out and took back (a net server's close is done when its callback runs). */
async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((ok) => srv.listen(0, '127.0.0.1', ok));
  const { port } = srv.address() as { port: number };
  await new Promise((ok) => srv.close(ok));
  return port;
}

/** Whether a fresh socket can bind `endpoint` within `ms`: ZeroMQ releases a closed socket's port asynchronously. */
async function bindable(endpoint: string, ms: number): Promise<boolean> {
  for (const until = Date.now() + ms; ; await sleep(50)) {
    const probe = new zmq.Router();
    try {
      await probe.bind(endpoint);
      return true;
    } catch {
      if (Date.now() > until) return false;
    } finally {
      probe.close();
    }
  }
}

describe('Sidecar.attach when a port is taken', () => {
  it('names the endpoint it could not bind and releases the one it did', async () => {
    const squatter = new zmq.Router();
    await squatter.bind('tcp://127.0.0.1:*');
    const taken = squatter.lastEndpoint!;
    const ctrlPort = await freePort();
    try {
      const err = await Sidecar.attach({
        endpoint: `tcp://127.0.0.1:${ctrlPort}`,
        dataEndpoint: taken,
        plaintext: true,
        timeoutMs: 1000,
      }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(SidecarStartError);
      expect((err as Error).message).toContain(`could not bind ${taken}`);
      // The control socket bound before the data socket failed; it must be released (a leaked one never is).
      expect(await bindable(`tcp://127.0.0.1:${ctrlPort}`, 10_000)).toBe(true);
    } finally {
      squatter.close();
    }
  });
});
