/**
 * Protocol v1 constants. The values come from protocols/constants.json through the generated
 * constants.gen.ts (the sidecar gets the same file as Python); protocols/wire-v1.md is the prose.
 */
import * as gen from './constants.gen.js';

export {
  DEFAULT_LIMITS,
  Flags,
  Kind,
  MAX_DIMS,
  MAX_SAFE_HEADER_INT,
  PREAMBLE_BYTES,
  STREAM_ALIGN,
  WIRE_MAJOR,
  WIRE_MINOR,
} from './constants.gen.js';

/** "PUNI": the first four bytes of every header frame. */
export const MAGIC = new TextEncoder().encode(gen.MAGIC_TEXT);

/** A message kind's name (`'req'`, `'chunk'`, ...). */
export type KindName = keyof typeof gen.Kind;
/** Kind byte → name, for decoding and error messages. */
export const KIND_NAMES: Record<number, KindName> = Object.fromEntries(
  Object.entries(gen.Kind).map(([k, v]) => [v, k as KindName]),
) as Record<number, KindName>;

/** Every defined flag bit: a preamble with any other bit set is refused. */
export const KNOWN_FLAGS = Object.values(gen.Flags).reduce((a, b) => a | b, 0);

/** Dense dtypes of raw payloads, with their item sizes in bytes. */
export const DTYPES = gen.DTYPES;
/** A raw payload's element type (`'f32'`, `'bf16'`, ...). */
export type DType = keyof typeof DTYPES;
/** Every {@link DType}, in the catalogue's order. */
export const DTYPE_NAMES = Object.keys(DTYPES) as DType[];

/** Transfer limits a connection runs under (defaults: {@link DEFAULT_LIMITS}). */
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
