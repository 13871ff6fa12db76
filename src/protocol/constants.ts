/**
 * Protocol v1 constants. The values come from protocols/constants.json through the generated
 * constants.gen.ts (the sidecar gets the same file as Python); protocols/wire-v1.md is the prose.
 */
import * as gen from './constants.gen.js';

export { DEFAULT_LIMITS, Flags, Kind, MAX_DIMS, MAX_SAFE_HEADER_INT, PREAMBLE_BYTES, STREAM_ALIGN, WIRE_MAJOR, WIRE_MINOR } from './constants.gen.js';

/** "PUNI": the first four bytes of every header frame. */
export const MAGIC = new TextEncoder().encode(gen.MAGIC_TEXT);

export type KindName = keyof typeof gen.Kind;
export const KIND_NAMES: Record<number, KindName> = Object.fromEntries(
  Object.entries(gen.Kind).map(([k, v]) => [v, k as KindName]),
) as Record<number, KindName>;

export const KNOWN_FLAGS = Object.values(gen.Flags).reduce((a, b) => a | b, 0);

/** Dense dtypes of raw payloads, with their item sizes in bytes. */
export const DTYPES = gen.DTYPES;
export type DType = keyof typeof DTYPES;
export const DTYPE_NAMES = Object.keys(DTYPES) as DType[];

export interface Limits {
  /** Payload bytes above which a message travels as a chunk stream on the data socket. */
  chunkBytes: number;
  /** Largest message (all payloads of one request/reply) either side accepts. */
  maxMessageBytes: number;
  /** Byte-credit window per peer and direction for chunk streams. */
  windowBytes: number;
  /** Largest header frame. */
  maxHeaderBytes: number;
  /** A chunk stream with no chunk for this long is dropped and its request fails. */
  stallMs: number;
}
