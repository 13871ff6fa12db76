/**
 * The client of a reward server (`{ url }` reward sources; examples/reward_server.py is a reference
 * server). One POST per `batchSize` items, in this body (`application/x-pairuni-reward`):
 *
 *     uint32 little-endian n | n bytes of UTF-8 JSON | the images' raw bytes (generation only)
 *
 * where the JSON is `{ side, step, items, images? }`: `items` one object per scored item (generation:
 * `{ prompt, pair_id }`; understanding: `{ completion, question, choices, answer, pair_id }`) and
 * `images` `{ dtype: 'uint8', shape: [b, H, W, 3] }` describing the bytes after it (row-major RGB).
 * The reply is JSON `{ "rewards": [b numbers] }` (`null` for a score that is not a finite number).
 * Timeouts, dropped connections and retryable statuses are retried under the completion client's
 * policy (src/completion/retry.ts).
 */
import { RewardError } from '../errors.js';
import { defaultSleep, type Sleep } from '../completion/chat-client.js';
import { isRetryableStatus, retryAfterMs, retryDelayMs } from '../completion/retry.js';
import type { RemoteRewardSource } from '../contract/reward-config.js';
import type { Tensor } from '../sidecar/index.js';

/** The Content-Type of a reward request (the framed body described above). */
export const REWARD_CONTENT_TYPE = 'application/x-pairuni-reward';

/** What one side sends to a reward server: JSON items, and for generation the images (uint8, B × H × W × 3). */
export interface RemoteRewardRequest {
  /** Which rollouts are scored: understanding answers or generated images. */
  side: 'und' | 'gen';
  /** The training step (completed steps before this one); errors name it. */
  step: number;
  /** One JSON object per rollout (prompt or question, answer, ...), in rollout order. */
  items: Array<Record<string, unknown>>;
  /** Generation only: the images, (B, H, W, 3) uint8, sent as raw bytes after the JSON header. */
  images?: Tensor;
}

/** How {@link remoteRewards} may be stopped, and (for tests) how it waits between attempts. */
export interface RemoteRewardOptions {
  /** Aborts the request in flight, and is checked before each retry: `remoteRewards` rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Waits the given milliseconds between attempts, rejecting when `signal` aborts (default: the
   * completion client's timer, which an abort cuts short); tests inject one that returns at once.
   */
  sleep?: Sleep;
}

/** The request body of items [lo, hi): the JSON header and a view (no copy) of those images' bytes. */
export function encodeRewardRequest(req: RemoteRewardRequest, lo: number, hi: number): Uint8Array[] {
  const json: Record<string, unknown> = { side: req.side, step: req.step, items: req.items.slice(lo, hi) };
  let bytes: Uint8Array | undefined;
  if (req.images) {
    const per = req.images.nbytes / req.images.shape[0];
    json.images = { dtype: 'uint8', shape: [hi - lo, ...req.images.shape.slice(1)] };
    bytes = req.images.bytes.subarray(lo * per, hi * per);
  }
  const head = new TextEncoder().encode(JSON.stringify(json));
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, head.byteLength, true);
  return bytes ? [len, head, bytes] : [len, head];
}

/** Scores `req.items` on the server `src`; errors are RewardErrors naming `name`, the step and the item. */
export async function remoteRewards(
  src: RemoteRewardSource,
  name: string,
  req: RemoteRewardRequest,
  opts: RemoteRewardOptions = {},
): Promise<Float32Array> {
  const n = req.items.length;
  const out = new Float32Array(n);
  const headers: Record<string, string> = { 'content-type': REWARD_CONTENT_TYPE };
  if (src.authEnv) {
    const token = process.env[src.authEnv];
    if (!token)
      throw new RewardError(
        `reward ${name}: the environment variable ${src.authEnv} (authEnv, the server's token) is not set`,
        name,
        req.step,
        'http',
      );
    headers.authorization = `Bearer ${token}`;
  }
  for (let lo = 0; lo < n; lo += src.batchSize) {
    const hi = Math.min(n, lo + src.batchSize);
    const scores = await post(src, name, req.step, new Blob(encodeRewardRequest(req, lo, hi)), headers, opts);
    if (!Array.isArray(scores) || scores.length !== hi - lo) {
      const got = Array.isArray(scores) ? `${scores.length} rewards` : 'no `rewards` array';
      throw new RewardError(
        `reward ${name} at step ${req.step}: the server sent ${got} for items ${lo}..${hi - 1} (${hi - lo} items)`,
        name,
        req.step,
        Array.isArray(scores) ? 'length' : 'bad_reply',
      );
    }
    scores.forEach((v, i) => (out[lo + i] = typeof v === 'number' ? v : Number.NaN));
  }
  return out;
}

async function post(
  src: RemoteRewardSource,
  name: string,
  step: number,
  body: Blob,
  headers: Record<string, string>,
  opts: RemoteRewardOptions,
): Promise<unknown> {
  const sleep = opts.sleep ?? defaultSleep;
  // A pause a Ctrl-C cannot end would hold the run for Retry-After (up to maxRetryAfterMs) after it.
  const never = new AbortController().signal;
  let last = '';
  let timedOut = false;
  for (let attempt = 0; attempt <= src.retry.maxRetries; attempt++) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    const timeout = AbortSignal.timeout(src.timeoutS * 1000);
    let retryAfter: number | undefined;
    try {
      const res = await fetch(src.url, {
        method: 'POST',
        body,
        headers,
        signal: opts.signal ? AbortSignal.any([timeout, opts.signal]) : timeout,
      });
      const text = await res.text();
      if (res.ok) {
        try {
          return (JSON.parse(text) as { rewards?: unknown }).rewards;
        } catch {
          throw new RewardError(
            `reward ${name} at step ${step}: the server's reply is not JSON: ${text.slice(0, 120)}`,
            name,
            step,
            'bad_reply',
          );
        }
      }
      if (!isRetryableStatus(res.status)) {
        throw new RewardError(
          `reward ${name} at step ${step}: ${src.url} answered HTTP ${res.status}: ${text.slice(0, 200)}`,
          name,
          step,
          'http',
        );
      }
      last = `HTTP ${res.status}`;
      timedOut = false;
      retryAfter = retryAfterMs(res.headers);
    } catch (e) {
      if (e instanceof RewardError) throw e;
      if (opts.signal?.aborted) throw opts.signal.reason;
      timedOut = timeout.aborted;
      last = timedOut
        ? `no reply within ${src.timeoutS} s`
        : `connection failed: ${(e as Error).cause ?? (e as Error).message}`;
    }
    if (attempt < src.retry.maxRetries) {
      const ms = retryDelayMs(
        { kind: 'retry', cause: last, message: last, retryAfterMs: retryAfter },
        attempt,
        src.retry,
      );
      await sleep(ms, opts.signal ?? never).catch((e: unknown) => {
        throw opts.signal?.aborted ? opts.signal.reason : e;
      });
    }
  }
  throw new RewardError(
    `reward ${name} at step ${step}: ${src.url}: ${last} (${src.retry.maxRetries + 1} attempts)`,
    name,
    step,
    timedOut ? 'timeout' : 'http',
  );
}
