/** A stop during a reward server's retry pause ends the pause: the run is not held for Retry-After. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { RemoteRewardSource } from '../../../src/contract/reward-config.js';
import { AbortedError } from '../../../src/errors.js';
import { remoteRewards } from '../../../src/train/remote-reward.js';

describe('remoteRewards and a stop', () => {
  it('cuts a 10-minute Retry-After pause short and sends no retry', async () => {
    let requests = 0;
    const server = createServer((req, res) => {
      requests++;
      req.resume();
      req.on('end', () => res.writeHead(429, { 'retry-after': '600' }).end('busy'));
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    try {
      const src = RemoteRewardSource.parse({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/score`,
        retry: { maxRetries: 3, maxRetryAfterMs: 900_000 },
      });
      const stop = new AbortController();
      const t0 = Date.now();
      setTimeout(() => stop.abort(new AbortedError('stopped by the test')), 200);
      const err = await remoteRewards(
        src,
        'judge',
        { side: 'und', step: 4, items: [{ completion: 'A' }] },
        {
          signal: stop.signal,
        },
      ).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AbortedError);
      expect((err as Error).message).toBe('stopped by the test');
      expect(Date.now() - t0).toBeLessThan(60_000);
      expect(requests).toBe(1);
    } finally {
      server.closeAllConnections();
      await new Promise((ok) => server.close(ok));
    }
  });
});
