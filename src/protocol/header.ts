/**
 * Header frame = 8-byte preamble + one canonical msgpack map.
 * The zod schemas below are the TS source of truth for header fields; protocols/schemas/ mirrors them.
 */
import { Decoder, Encoder, ExtData } from '@msgpack/msgpack';
import { z } from 'zod';
import { ProtocolError, WIRE_ERROR_CODES } from '../errors.js';
import {
  DTYPE_NAMES,
  KIND_NAMES,
  KNOWN_FLAGS,
  Kind,
  type KindName,
  MAGIC,
  MAX_DIMS,
  MAX_SAFE_HEADER_INT,
  PREAMBLE_BYTES,
  WIRE_MAJOR,
  WIRE_MINOR,
} from './constants.js';

const uint = z.number().int().min(0).max(MAX_SAFE_HEADER_INT);
const name = z.string().min(1).max(256);

/** One payload's descriptor in a header's `b` list: name, encoding (`raw` tensor or `arrow` table), byte length, dtype and shape. */
export const BufferDesc = z.looseObject({
  nm: name,
  enc: z.enum(['raw', 'arrow']),
  n: uint,
  dt: z.enum(DTYPE_NAMES as [string, ...string[]]).optional(),
  sh: z.array(uint).max(MAX_DIMS).optional(),
});
/** A parsed {@link BufferDesc} (unknown keys kept: newer minors may add some). */
export type BufferDesc = z.infer<typeof BufferDesc>;

/** A streamed message's `st`: stream id and total bytes of its chunk stream (protocols/wire-v1.md). */
export const StreamDesc = z.looseObject({ sid: uint, tot: uint });

const payloadFields = {
  a: z.record(z.string(), z.unknown()).optional(),
  b: z.array(BufferDesc).max(4096).optional(),
  st: StreamDesc.optional(),
};

/** The body of an `err` message: the code the error classes map from, a message, retryability, detail. */
export const WireError = z.looseObject({
  code: z.enum(WIRE_ERROR_CODES),
  msg: z.string(),
  retryable: z.boolean().optional(),
  detail: z.record(z.string(), z.unknown()).optional(),
});

/** The msgpack header of each message kind; loose, so a newer minor's extra keys pass. */
export const HeaderSchemas = {
  hello: z.looseObject({
    wire: z.tuple([uint, uint]),
    minor: uint,
    caps: z.array(z.string()).max(64),
    rank: uint,
    world: uint.min(1),
    local_rank: uint.optional(),
    host: z.string().optional(),
    pid: uint.optional(),
    inc: z.string().min(1).max(128),
  }),
  welcome: z.looseObject({
    major: uint,
    minor: uint,
    run: z.string(),
    hb_ms: uint.min(10),
    dead_ms: uint.min(100),
    limits: z.looseObject({
      chunk: uint.min(1024),
      max_msg: uint,
      window: uint.min(1024),
      max_hdr: uint.min(1024),
      stall_ms: uint.min(100).optional(),
    }),
  }),
  req: z.looseObject({ id: uint, op: name, dl: uint.optional(), ...payloadFields }),
  res: z.looseObject({ re: uint, ...payloadFields }),
  err: z.looseObject({ re: uint.optional(), err: WireError }),
  cancel: z.looseObject({ re: uint }),
  hb: z.looseObject({ state: z.string().optional(), busy: uint.optional(), mem: uint.optional() }),
  credit: z.looseObject({ n: uint.min(1) }),
  chunk: z.looseObject({ sid: uint, seq: uint, off: uint, last: z.boolean().optional() }),
  bye: z.looseObject({ reason: z.string().optional() }),
  prog: z.looseObject({ re: uint, done: z.number(), total: z.number().optional(), msg: z.string().optional() }),
} satisfies Record<KindName, z.ZodType>;

/** The parsed header of kind `K`. */
export type Header<K extends KindName> = z.infer<(typeof HeaderSchemas)[K]>;
/** A parsed header of any kind. */
export type AnyHeader = { [K in KindName]: Header<K> }[KindName];

/** A header frame decoded and validated: the preamble's fields and the msgpack map. */
export interface DecodedHeader {
  /** Message kind from the preamble. */
  kind: KindName;
  /** Preamble flag bits ({@link Flags}). */
  flags: number;
  /** Sender's wire major. */
  major: number;
  /** Sender's wire minor. */
  minor: number;
  /** The msgpack map, validated against the kind's schema. */
  header: Record<string, unknown>;
}

const encoder = new Encoder({ sortKeys: true, ignoreUndefined: true, forceFloat32: false });

/** The limit a header frame is decoded under (a {@link Limits} subset). */
export interface DecodeLimits {
  /** Largest header frame accepted, bytes. */
  maxHeaderBytes: number;
}

function makeDecoder(maxHeaderBytes: number): Decoder {
  return new Decoder({
    useBigInt64: false,
    maxStrLength: maxHeaderBytes,
    maxBinLength: 0,
    maxArrayLength: 65_536,
    maxMapLength: 4096,
    maxExtLength: 0,
    mapKeyConverter: (key: unknown) => {
      if (typeof key !== 'string')
        throw new ProtocolError('bad_request', `header map key must be a string, got ${typeof key}`);
      return key;
    },
  });
}
const decoders = new Map<number, Decoder>();

/** Encodes a header map canonically (sorted keys, minimal ints, float64 floats). */
export function encodeCanonical(value: unknown): Uint8Array {
  return encoder.encode(value);
}

/** One header frame: preamble + canonical msgpack of `header`, in a fresh buffer (zeromq may send it zero-copy). */
export function encodeHeaderFrame(kind: KindName, header: object, flags = 0): Buffer {
  const body = encoder.encode(header);
  // A fresh buffer per message: zeromq.js sends large buffers zero-copy, so they must not be reused.
  const out = Buffer.allocUnsafeSlow(PREAMBLE_BYTES + body.byteLength);
  out.set(MAGIC, 0);
  out[4] = WIRE_MAJOR;
  out[5] = WIRE_MINOR;
  out[6] = Kind[kind];
  out[7] = flags;
  out.set(body, PREAMBLE_BYTES);
  return out;
}

/** Only plain JSON-like data may travel in headers: no ext types, binaries, Dates, NaN or Infinity. */
function checkPlain(v: unknown, depth: number, path: string): void {
  if (depth > 32) throw new ProtocolError('bad_request', `header nesting deeper than 32 at ${path}`);
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return;
  if (typeof v === 'number') {
    // Integers beyond 2^53 cannot be told apart from floats once decoded; the canonical re-encode
    // check rejects them when they arrived with an integer encoding (uint64/int64).
    if (!Number.isFinite(v)) throw new ProtocolError('bad_request', `non-finite number in header at ${path}`);
    return;
  }
  if (Array.isArray(v)) {
    v.forEach((x, i) => checkPlain(x, depth + 1, `${path}[${i}]`));
    return;
  }
  if (v instanceof ExtData || v instanceof Date)
    throw new ProtocolError('bad_request', `msgpack extension type in header at ${path}`);
  if (v instanceof Uint8Array) throw new ProtocolError('bad_request', `binary value in header at ${path}`);
  if (typeof v === 'object') {
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) checkPlain(x, depth + 1, `${path}.${k}`);
    return;
  }
  throw new ProtocolError('bad_request', `unsupported value of type ${typeof v} in header at ${path}`);
}

/**
 * Best-effort read of `id`/`re` from a header that failed validation, so the pending call it
 * answers can be rejected instead of waiting forever.
 */
export function salvageIds(frame: Uint8Array): { id?: number; re?: number } {
  try {
    if (frame.byteLength <= PREAMBLE_BYTES) return {};
    const v = new Decoder({ maxBinLength: 1 << 20, maxStrLength: 1 << 20 }).decode(
      frame.subarray(PREAMBLE_BYTES),
    ) as Record<string, unknown>;
    const pick = (x: unknown) => (typeof x === 'number' && Number.isSafeInteger(x) && x >= 0 ? x : undefined);
    return v && typeof v === 'object' ? { id: pick(v.id), re: pick(v.re) } : {};
  } catch {
    return {};
  }
}

/**
 * Reads a frame's 8-byte preamble before any msgpack is parsed, so a stray or foreign frame is refused cheaply.
 *
 * @throws ProtocolError `bad_request` on a short frame, bad magic, unknown kind or flag bits; `unsupported_version` on another major.
 */
export function parsePreamble(frame: Uint8Array): { kind: KindName; flags: number; major: number; minor: number } {
  if (frame.byteLength < PREAMBLE_BYTES) {
    throw new ProtocolError(
      'bad_request',
      `header frame of ${frame.byteLength} bytes is shorter than the 8-byte preamble`,
    );
  }
  for (let i = 0; i < 4; i++) {
    if (frame[i] !== MAGIC[i]) throw new ProtocolError('bad_request', 'bad magic: not a pairuni frame');
  }
  const major = frame[4];
  const minor = frame[5];
  if (major !== WIRE_MAJOR) {
    throw new ProtocolError(
      'unsupported_version',
      `wire major ${major} is not supported (this side speaks ${WIRE_MAJOR})`,
    );
  }
  const kind = KIND_NAMES[frame[6]];
  if (!kind) throw new ProtocolError('bad_request', `unknown message kind ${frame[6]}`);
  const flags = frame[7];
  if (flags & ~KNOWN_FLAGS)
    throw new ProtocolError('bad_request', `unknown flag bits 0x${(flags & ~KNOWN_FLAGS).toString(16)}`);
  return { kind, flags, major, minor };
}

/**
 * Parses and validates a header frame: preamble, msgpack (size-limited), canonical form, plain
 * values only, and the kind's schema. Every failure is a ProtocolError with a wire code.
 */
export function decodeHeaderFrame(
  frame: Uint8Array,
  limits: DecodeLimits = { maxHeaderBytes: 1 << 20 },
): DecodedHeader {
  const pre = parsePreamble(frame);
  const body = frame.subarray(PREAMBLE_BYTES);
  if (body.byteLength > limits.maxHeaderBytes) {
    throw new ProtocolError(
      'too_large',
      `header of ${body.byteLength} bytes exceeds the ${limits.maxHeaderBytes}-byte limit`,
    );
  }
  if (body.byteLength === 0) throw new ProtocolError('bad_request', 'empty msgpack header');
  let dec = decoders.get(limits.maxHeaderBytes);
  if (!dec) decoders.set(limits.maxHeaderBytes, (dec = makeDecoder(limits.maxHeaderBytes)));
  let value: unknown;
  try {
    value = dec.decode(body);
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    throw new ProtocolError('bad_request', `malformed msgpack header: ${(e as Error).message}`, { cause: e });
  }
  if (
    value === null ||
    typeof value !== 'object' ||
    Array.isArray(value) ||
    value instanceof Uint8Array ||
    value instanceof ExtData
  ) {
    throw new ProtocolError('bad_request', 'msgpack header root must be a map');
  }
  checkPlain(value, 0, '$');
  // Canonical form makes duplicate keys, unsorted keys and non-minimal encodings detectable, and
  // lets both languages produce byte-identical headers (see protocols/vectors).
  const again = encoder.encode(value);
  if (
    again.byteLength !== body.byteLength ||
    Buffer.compare(
      Buffer.from(again.buffer, again.byteOffset, again.byteLength),
      Buffer.from(body.buffer, body.byteOffset, body.byteLength),
    ) !== 0
  ) {
    throw new ProtocolError(
      'bad_request',
      'header is not canonical msgpack (duplicate or unsorted keys, or non-minimal encoding)',
    );
  }
  const parsed = HeaderSchemas[pre.kind].safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ProtocolError(
      'bad_request',
      `invalid ${pre.kind} header: ${issue.path.join('.') || '$'}: ${issue.message}`,
    );
  }
  return { ...pre, header: parsed.data as Record<string, unknown> };
}
