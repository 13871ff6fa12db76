/**
 * The completion cache: one append-only JSONL file holding two kinds of lines.
 *  - `call`: a finished chat call (request hash → reply). A run killed between the generation and
 *    the check of an item replays the generation from here instead of paying for it again.
 *  - `item`: the final outcome of an item (accepted fill, or rejection with its reason).
 * Lines are written whole and fdatasync'd before the caller continues (batched: all lines queued
 * during one sync go out in the next write). A kill can only tear the last line; `open` cuts that
 * partial line off. Any other unparsable line means someone else wrote the file: that is an error.
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { DataError } from '../errors.js';
import { REJECT_REASONS } from './types.js';

const Usage = z.object({ in: z.number().int().nonnegative(), out: z.number().int().nonnegative() }).strict();

export const CallEntry = z
  .object({
    t: z.literal('call'),
    k: z.string(),
    model: z.string(),
    text: z.string().nullable(),
    refusal: z.string().nullable(),
    finish: z.string().nullable(),
    usage: Usage,
  })
  .strict();
export type CallEntry = z.infer<typeof CallEntry>;

const Stats = z
  .object({
    calls: z.number().int(),
    replayedCalls: z.number().int(),
    formatRetries: z.number().int(),
    regenerations: z.number().int(),
  })
  .strict();

export const ItemOutcome = z.discriminatedUnion('status', [
  z
    .object({
      status: z.literal('accepted'),
      fill: z.union([
        z.object({ caption: z.string() }).strict(),
        z.object({ question: z.string(), choices: z.array(z.string()), answer: z.string() }).strict(),
      ]),
      stats: Stats,
    })
    .strict(),
  z
    .object({
      status: z.literal('rejected'),
      reason: z.enum(REJECT_REASONS),
      detail: z.string(),
      stats: Stats,
      /** The limits in force when it was given up; raising one later re-opens the item. */
      limits: z.object({ maxFormatRetries: z.number().int(), maxRegenerations: z.number().int() }).strict(),
    })
    .strict(),
]);
export type ItemOutcome = z.infer<typeof ItemOutcome>;

export const ItemEntry = z
  .object({ t: z.literal('item'), k: z.string(), direction: z.enum(['u2c', 'g2qa']), outcome: ItemOutcome })
  .strict();
export type ItemEntry = z.infer<typeof ItemEntry>;

const Line = z.discriminatedUnion('t', [CallEntry, ItemEntry]);

export interface CacheLoadInfo {
  calls: number;
  items: number;
  /** Bytes of a partial last line (from a killed writer) that were cut off on open. */
  tornBytes: number;
}

/** The crash-safe cache of chat calls and item outcomes that makes a rerun pay only for unfinished items (format above). */
export class CompletionCache {
  private readonly calls = new Map<string, CallEntry>();
  private readonly items = new Map<string, ItemEntry>();
  private queue: { line: string; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private flushing: Promise<void> | undefined;
  private closed = false;
  /** What `open` loaded: calls, items, and bytes of a torn last line it cut off. */
  loadInfo: CacheLoadInfo = { calls: 0, items: 0, tornBytes: 0 };

  private constructor(
    /** The cache file; undefined for an in-memory cache. */
    readonly path: string | undefined,
    private fh: FileHandle | undefined,
  ) {}

  /** A cache that lives only as long as the process (nothing persisted). */
  static memory(): CompletionCache {
    return new CompletionCache(undefined, undefined);
  }

  /** Opens (creating it and its folder if needed) and loads the cache file; a torn last line is cut off. */
  static async open(path: string): Promise<CompletionCache> {
    await mkdir(dirname(path), { recursive: true });
    const tornBytes = await cutTornTail(path);
    // Opening for append first also creates a missing file, so loading needs no special case.
    const cache = new CompletionCache(path, await open(path, 'a'));
    try {
      await cache.load();
    } catch (e) {
      await cache.fh?.close();
      throw e;
    }
    cache.loadInfo.tornBytes = tornBytes;
    return cache;
  }

  private async load(): Promise<void> {
    const path = this.path!;
    const rl = createInterface({ input: createReadStream(path), crlfDelay: Infinity });
    let row = 0;
    for await (const raw of rl) {
      row++;
      if (!raw.trim()) continue;
      let json: unknown;
      try {
        json = JSON.parse(raw);
      } catch {
        throw new DataError(
          `${path}:${row}: completion cache line is not JSON (the file was edited or written by something else)`,
          path,
          row,
        );
      }
      const r = Line.safeParse(json);
      if (!r.success) {
        throw new DataError(
          `${path}:${row}: completion cache line has an unknown shape: ${r.error.issues[0]?.message}`,
          path,
          row,
        );
      }
      if (r.data.t === 'call') this.calls.set(r.data.k, r.data);
      else this.items.set(r.data.k, r.data);
    }
    this.loadInfo = { calls: this.calls.size, items: this.items.size, tornBytes: 0 };
  }

  /** The cached reply of a chat call, by request hash. */
  getCall(k: string): CallEntry | undefined {
    return this.calls.get(k);
  }

  /** The cached outcome of an item, by item key. */
  getItem(k: string): ItemEntry | undefined {
    return this.items.get(k);
  }

  /** Resolves once the line is on disk. */
  putCall(e: CallEntry): Promise<void> {
    this.calls.set(e.k, e);
    return this.append(e);
  }

  /** Records an item's final outcome; resolves once the line is on disk. */
  putItem(e: ItemEntry): Promise<void> {
    this.items.set(e.k, e);
    return this.append(e);
  }

  private append(e: CallEntry | ItemEntry): Promise<void> {
    if (!this.fh) return Promise.resolve();
    if (this.closed) return Promise.reject(new Error('completion cache is closed'));
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ line: `${JSON.stringify(e)}\n`, resolve, reject });
      this.flushing ??= this.flushLoop().finally(() => {
        this.flushing = undefined;
      });
    });
  }

  private async flushLoop(): Promise<void> {
    while (this.queue.length) {
      const batch = this.queue;
      this.queue = [];
      try {
        await this.fh!.write(batch.map((b) => b.line).join(''));
        await this.fh!.datasync();
        for (const b of batch) b.resolve();
      } catch (err) {
        for (const b of batch) b.reject(err);
      }
    }
  }

  /** Waits for queued lines to reach the disk, then closes the file; idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.flushing) await this.flushing;
    await this.fh?.close();
    this.fh = undefined;
  }
}

/** Truncates the file after its last newline; returns how many bytes were dropped. */
async function cutTornTail(path: string): Promise<number> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw e;
  }
  if (size === 0) return 0;
  const fh = await open(path, 'r+');
  try {
    const chunk = Buffer.alloc(64 * 1024);
    let end = size;
    while (end > 0) {
      const start = Math.max(0, end - chunk.length);
      const { bytesRead } = await fh.read(chunk, 0, end - start, start);
      const nl = chunk.subarray(0, bytesRead).lastIndexOf(0x0a);
      if (nl >= 0) {
        const keep = start + nl + 1;
        if (keep === size) return 0;
        await fh.truncate(keep);
        await fh.sync();
        return size - keep;
      }
      end = start;
    }
    await fh.truncate(0);
    await fh.sync();
    return size;
  } finally {
    await fh.close();
  }
}
