/** Protocol v1 constants. protocols/wire-v1.md is the normative text; keep the two in step. */

/** "PUNI": the first four bytes of every header frame. */
export const MAGIC = Uint8Array.of(0x50, 0x55, 0x4e, 0x49);
export const WIRE_MAJOR = 1;
export const WIRE_MINOR = 0;
export const PREAMBLE_BYTES = 8;

/** Byte 6 of the preamble: what the message is. */
export const Kind = {
  hello: 1,
  welcome: 2,
  req: 3,
  res: 4,
  err: 5,
  cancel: 6,
  hb: 7,
  credit: 8,
  chunk: 9,
  bye: 10,
  prog: 11,
} as const;
export type KindName = keyof typeof Kind;
export const KIND_NAMES: Record<number, KindName> = Object.fromEntries(
  Object.entries(Kind).map(([k, v]) => [v, k as KindName]),
) as Record<number, KindName>;

/** Byte 7 of the preamble. Unknown bits must be zero in v1. */
export const Flags = {
  /** Payload frames do not follow in this message: they arrive as a chunk stream on the data socket. */
  streamed: 0x01,
} as const;
export const KNOWN_FLAGS = Flags.streamed;

/** Dense dtypes of raw payloads, with their item sizes in bytes. */
export const DTYPES = {
  bool: 1,
  u8: 1,
  i8: 1,
  i16: 2,
  i32: 4,
  i64: 8,
  f16: 2,
  bf16: 2,
  f32: 4,
  f64: 8,
} as const;
export type DType = keyof typeof DTYPES;
export const DTYPE_NAMES = Object.keys(DTYPES) as DType[];

/** Payload buffers inside a chunk stream start at multiples of this (so every dtype is aligned). */
export const STREAM_ALIGN = 64;
export const MAX_DIMS = 32;

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

export const DEFAULT_LIMITS: Limits = {
  chunkBytes: 4 * 1024 * 1024,
  maxMessageBytes: 16 * 1024 * 1024 * 1024,
  windowBytes: 32 * 1024 * 1024,
  maxHeaderBytes: 1024 * 1024,
  stallMs: 30_000,
};

/** Largest integer a header may carry (both msgpack libraries agree below it). */
export const MAX_SAFE_HEADER_INT = Number.MAX_SAFE_INTEGER;
