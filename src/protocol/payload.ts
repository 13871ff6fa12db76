/**
 * Payload frames of a message: describing outgoing tensors/tables, and checking incoming frames
 * against their descriptors before anything is allocated or viewed.
 */
import type * as arrow from 'apache-arrow';
import { Table } from 'apache-arrow';
import { ProtocolError } from '../errors.js';
import { DTYPES, type DType, type Limits, STREAM_ALIGN } from './constants.js';
import { decodeArrow, encodeArrow } from './arrow.js';
import type { BufferDesc } from './header.js';
import { Tensor, numel } from './tensor.js';

/** One payload of a message: a dense tensor (`raw`) or an Arrow table (`arrow`). */
export type Payload = Tensor | arrow.Table;
/** A message's payloads by name; names are the op's declared payload names. */
export type Payloads = Record<string, Payload>;

/** A payload ready to send: its descriptor for the header and the bytes of its frame. */
export interface OutgoingBuffer {
  /** Goes into the header's `b` list. */
  desc: BufferDesc;
  /** The payload frame. */
  bytes: Uint8Array;
}

/** Descriptors and frame bytes of `payloads`, in insertion order; Arrow tables are checked against the v1 subset and encoded. */
export function describePayloads(payloads: Payloads | undefined): OutgoingBuffer[] {
  const out: OutgoingBuffer[] = [];
  for (const [nm, p] of Object.entries(payloads ?? {})) {
    if (p instanceof Tensor) {
      out.push({ desc: { nm, enc: 'raw', n: p.nbytes, dt: p.dtype, sh: [...p.shape] }, bytes: p.bytes });
    } else if (p instanceof Table) {
      const bytes = encodeArrow(p);
      out.push({ desc: { nm, enc: 'arrow', n: bytes.byteLength }, bytes });
    } else {
      throw new ProtocolError('bad_request', `payload '${nm}' must be a Tensor or an apache-arrow Table`);
    }
  }
  return out;
}

/** Byte offsets of each buffer inside a chunk stream: each starts on a 64-byte boundary. */
export function streamLayout(descs: readonly BufferDesc[]): { offsets: number[]; total: number } {
  const offsets: number[] = [];
  let pos = 0;
  for (const d of descs) {
    pos = Math.ceil(pos / STREAM_ALIGN) * STREAM_ALIGN;
    offsets.push(pos);
    pos += d.n;
  }
  return { offsets, total: pos };
}

/** Checks descriptors alone (before any payload byte is read or allocated). */
export function checkDescriptors(descs: readonly BufferDesc[], limits: Pick<Limits, 'maxMessageBytes'>): number {
  const names = new Set<string>();
  let total = 0;
  for (const d of descs) {
    if (names.has(d.nm)) throw new ProtocolError('bad_request', `two payloads named '${d.nm}'`);
    names.add(d.nm);
    if (d.enc === 'raw') {
      if (d.dt === undefined || d.sh === undefined)
        throw new ProtocolError('bad_request', `raw payload '${d.nm}' needs dt and sh`);
      const want = numel(d.sh) * DTYPES[d.dt as DType];
      if (!Number.isSafeInteger(want) || want !== d.n) {
        throw new ProtocolError('bad_request', `payload '${d.nm}': ${d.dt}[${d.sh}] is ${want} bytes but n=${d.n}`);
      }
    } else if (d.dt !== undefined || d.sh !== undefined) {
      throw new ProtocolError('bad_request', `arrow payload '${d.nm}' must not carry dt/sh (bf16/f16 travel raw)`);
    }
    total += d.n;
  }
  if (total > limits.maxMessageBytes) {
    throw new ProtocolError(
      'too_large',
      `payloads total ${total} bytes, over the ${limits.maxMessageBytes}-byte limit`,
    );
  }
  return total;
}

/** A received message's payloads, split by encoding. */
export interface DecodedPayloads {
  /** Raw payloads by name (views of the received frames). */
  tensors: Record<string, Tensor>;
  /** Arrow payloads by name. */
  tables: Record<string, arrow.Table>;
}

/** Builds tensors and tables from frames (one per descriptor, in order). */
export function decodePayloads(
  descs: readonly BufferDesc[] | undefined,
  frames: readonly Uint8Array[],
): DecodedPayloads {
  const ds = descs ?? [];
  if (frames.length !== ds.length) {
    throw new ProtocolError('bad_request', `${ds.length} payload descriptors but ${frames.length} payload frames`);
  }
  const tensors: Record<string, Tensor> = {};
  const tables: Record<string, arrow.Table> = {};
  ds.forEach((d, i) => {
    const f = frames[i];
    if (f.byteLength !== d.n)
      throw new ProtocolError(
        'bad_request',
        `payload '${d.nm}': frame has ${f.byteLength} bytes, descriptor says ${d.n}`,
      );
    if (d.enc === 'raw') {
      tensors[d.nm] = new Tensor(d.dt as DType, d.sh as number[], f);
      checkBoolBytes(d.nm, tensors[d.nm]);
    } else tables[d.nm] = decodeArrow(f, `payload '${d.nm}'`);
  });
  return { tensors, tables };
}

/** Rejects bool payloads holding bytes other than 0/1 (other languages would read them as UB). */
export function checkBoolBytes(name: string, t: Tensor): void {
  if (t.dtype !== 'bool') return;
  for (let i = 0; i < t.bytes.length; i++) {
    if (t.bytes[i] > 1)
      throw new ProtocolError('bad_request', `payload '${name}': bool tensor holds bytes other than 0/1`);
  }
}
