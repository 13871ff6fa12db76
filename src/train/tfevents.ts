/**
 * TensorBoard event files written without TensorFlow: TFRecord framing
 *
 *   uint64 length (LE) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
 *
 * around a minimal protobuf encoding of `tensorflow.Event` (wall_time = 1 double, step = 2 int64,
 * file_version = 3 string, summary = 5, session_log = 7) and `Summary` (value = 1: tag = 1,
 * simple_value = 2 float, image = 4: height = 1, width = 2, colorspace = 3, encoded_image_string = 4)
 * and `SessionLog` (status = 1 enum, checkpoint_path = 2, msg = 3). A reader for the same subset is
 * included so tests (and users) can check the bytes.
 */
import { closeSync, fsyncSync, openSync, readdirSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { PairuniError } from '../errors.js';

// -- CRC32C (Castagnoli, reflected polynomial 0x82F63B78) ----------------------------------------
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15 and add a constant. */
export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

// -- protobuf encoding ----------------------------------------------------------------------------
class PB {
  private parts: Uint8Array[] = [];
  private n = 0;

  private push(b: Uint8Array): this {
    this.parts.push(b);
    this.n += b.length;
    return this;
  }

  varint(v: number | bigint): this {
    let x = BigInt.asUintN(64, BigInt(v));
    const out: number[] = [];
    while (x >= 0x80n) {
      out.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    out.push(Number(x));
    return this.push(Uint8Array.from(out));
  }

  key(field: number, wire: number): this {
    return this.varint((field << 3) | wire);
  }

  double(field: number, v: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, true);
    return this.key(field, 1).push(b);
  }

  float(field: number, v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    return this.key(field, 5).push(b);
  }

  int(field: number, v: number | bigint): this {
    return this.key(field, 0).varint(v);
  }

  bytes(field: number, b: Uint8Array): this {
    return this.key(field, 2).varint(b.length).push(b);
  }

  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.n);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

export interface ImageSummary {
  height: number;
  width: number;
  colorspace: number; // 3 = RGB
  png: Uint8Array;
}

export type SummaryValue = { tag: string; simpleValue: number } | { tag: string; image: ImageSummary };

/** `tensorflow.SessionLog.SessionStatus`. */
export const SESSION_STATUS = { unspecified: 0, start: 1, stop: 2, checkpoint: 3 } as const;

export interface SessionLog {
  status: number;
  checkpointPath?: string;
  msg?: string;
}

export interface TFEvent {
  wallTime: number;
  step?: number;
  fileVersion?: string;
  summary?: SummaryValue[];
  /**
   * A START at step s tells TensorBoard the job restarted from a checkpoint: it drops every event
   * with step >= s it read before (TensorBoard's "orphaned data" purge for file_version 2 files).
   */
  sessionLog?: SessionLog;
}

export function encodeEvent(e: TFEvent): Uint8Array {
  const pb = new PB().double(1, e.wallTime);
  if (e.step !== undefined) pb.int(2, e.step);
  if (e.fileVersion !== undefined) pb.string(3, e.fileVersion);
  if (e.summary) {
    const s = new PB();
    for (const v of e.summary) {
      const val = new PB().string(1, v.tag);
      if ('simpleValue' in v) val.float(2, v.simpleValue);
      else {
        const img = new PB()
          .int(1, v.image.height)
          .int(2, v.image.width)
          .int(3, v.image.colorspace)
          .bytes(4, v.image.png);
        val.bytes(4, img.finish());
      }
      s.bytes(1, val.finish());
    }
    pb.bytes(5, s.finish());
  }
  if (e.sessionLog) {
    const l = new PB().int(1, e.sessionLog.status);
    if (e.sessionLog.checkpointPath !== undefined) l.string(2, e.sessionLog.checkpointPath);
    if (e.sessionLog.msg !== undefined) l.string(3, e.sessionLog.msg);
    pb.bytes(7, l.finish());
  }
  return pb.finish();
}

export function frameRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + 4 + data.length + 4);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(data.length), true);
  dv.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  dv.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

// -- writer -----------------------------------------------------------------------------------------

const EVENT_FILE = /^events\.out\.tfevents\.(\d+)\./;

/**
 * Writes events to a new `<dir>/events.out.tfevents.<secs>.<host><suffix>`; every write is flushed to
 * the OS. TensorBoard reads a directory's event files in name order, so a new file must sort after
 * every file already there: `<secs>` is now, or one more than the newest file's when that is not
 * older (two writers in one second, a clock behind an earlier machine's), and the file is created
 * exclusively, never appended to.
 */
export class EventWriter {
  /** The event file being written. */
  readonly path: string;
  private fd: number | undefined;

  constructor(dir: string, suffix = '') {
    let secs = Math.floor(Date.now() / 1000);
    for (const n of readdirSync(dir)) {
      const m = EVENT_FILE.exec(n);
      if (m && Number(m[1]) >= secs) secs = Number(m[1]) + 1;
    }
    for (;;) {
      const path = join(dir, `events.out.tfevents.${secs}.${hostname()}${suffix}`);
      try {
        this.fd = openSync(path, 'wx');
        this.path = path;
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        secs += 1; // another writer took this name since the scan
      }
    }
    this.write({ wallTime: Date.now() / 1000, fileVersion: 'brain.Event:2' });
  }

  /** Appends one raw event record. */
  write(e: TFEvent): void {
    if (this.fd === undefined) throw new Error(`event file ${this.path} is closed`);
    writeSync(this.fd, frameRecord(encodeEvent(e)));
  }

  /** One scalar per tag at `step`; non-finite values are left out (TensorBoard would plot them as gaps anyway). */
  scalars(step: number, values: Record<string, number>, wallTime = Date.now() / 1000): void {
    const summary = Object.entries(values)
      .filter(([, v]) => typeof v === 'number' && Number.isFinite(v))
      .map(([tag, v]) => ({ tag, simpleValue: v }));
    if (summary.length) this.write({ wallTime, step, summary });
  }

  /** One encoded image under `tag` at `step`. */
  image(step: number, tag: string, image: ImageSummary, wallTime = Date.now() / 1000): void {
    this.write({ wallTime, step, summary: [{ tag, image }] });
  }

  /**
   * Marks a (re)start whose first event will be at `step`: TensorBoard forgets what earlier files
   * logged at `step` and later (steps a restart from an older checkpoint recomputes or never reaches).
   */
  sessionStart(step: number, msg?: string, wallTime = Date.now() / 1000): void {
    this.write({ wallTime, step, sessionLog: { status: SESSION_STATUS.start, ...(msg !== undefined ? { msg } : {}) } });
  }

  /** Syncs the file to disk and closes it; idempotent. */
  close(): void {
    if (this.fd !== undefined) {
      fsyncSync(this.fd);
      closeSync(this.fd);
      this.fd = undefined;
    }
  }
}

// -- reader (tests, tooling) -------------------------------------------------------------------

/** A TFRecord stream that is cut short or fails a CRC. */
export class TFRecordError extends PairuniError {
  constructor(message: string) {
    super('tfrecord', message);
  }
}

/** Splits a TFRecord byte stream into record payloads, checking both CRCs. */
export function readRecords(buf: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let o = 0;
  while (o < buf.length) {
    if (o + 12 > buf.length) throw new TFRecordError(`truncated record header at byte ${o}`);
    const len = Number(dv.getBigUint64(o, true));
    if (dv.getUint32(o + 8, true) !== maskedCrc32c(buf.subarray(o, o + 8)))
      throw new TFRecordError(`bad length CRC at byte ${o}`);
    const data = buf.subarray(o + 12, o + 12 + len);
    if (data.length !== len || o + 16 + len > buf.length) throw new TFRecordError(`truncated record at byte ${o}`);
    if (dv.getUint32(o + 12 + len, true) !== maskedCrc32c(data)) throw new TFRecordError(`bad data CRC at byte ${o}`);
    out.push(data);
    o += 16 + len;
  }
  return out;
}

interface Field {
  field: number;
  wire: number;
  value: bigint | Uint8Array | number;
}

function parseFields(b: Uint8Array): Field[] {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: Field[] = [];
  let o = 0;
  const varint = (): bigint => {
    let x = 0n;
    let shift = 0n;
    for (;;) {
      if (o >= b.length) throw new TFRecordError('truncated varint');
      const byte = b[o++];
      x |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return x;
      shift += 7n;
    }
  };
  while (o < b.length) {
    const key = Number(varint());
    const field = key >>> 3;
    const wire = key & 7;
    if (wire === 0) out.push({ field, wire, value: varint() });
    else if (wire === 1) {
      out.push({ field, wire, value: dv.getFloat64(o, true) });
      o += 8;
    } else if (wire === 5) {
      out.push({ field, wire, value: dv.getFloat32(o, true) });
      o += 4;
    } else if (wire === 2) {
      const len = Number(varint());
      out.push({ field, wire, value: b.subarray(o, o + len) });
      o += len;
    } else throw new TFRecordError(`unsupported wire type ${wire}`);
  }
  return out;
}

/** Decodes the Event subset this module writes. */
export function decodeEvent(b: Uint8Array): TFEvent {
  const e: TFEvent = { wallTime: 0 };
  for (const f of parseFields(b)) {
    if (f.field === 1) e.wallTime = f.value as number;
    else if (f.field === 2) e.step = Number(BigInt.asIntN(64, f.value as bigint));
    else if (f.field === 3) e.fileVersion = new TextDecoder().decode(f.value as Uint8Array);
    else if (f.field === 7) {
      const l: SessionLog = { status: 0 };
      for (const x of parseFields(f.value as Uint8Array)) {
        if (x.field === 1) l.status = Number(x.value);
        else if (x.field === 2) l.checkpointPath = new TextDecoder().decode(x.value as Uint8Array);
        else if (x.field === 3) l.msg = new TextDecoder().decode(x.value as Uint8Array);
      }
      e.sessionLog = l;
    } else if (f.field === 5) {
      e.summary = [];
      for (const v of parseFields(f.value as Uint8Array)) {
        if (v.field !== 1) continue;
        let tag = '';
        let simple: number | undefined;
        let image: ImageSummary | undefined;
        for (const x of parseFields(v.value as Uint8Array)) {
          if (x.field === 1) tag = new TextDecoder().decode(x.value as Uint8Array);
          else if (x.field === 2) simple = x.value as number;
          else if (x.field === 4) {
            const img: ImageSummary = { height: 0, width: 0, colorspace: 0, png: new Uint8Array() };
            for (const y of parseFields(x.value as Uint8Array)) {
              if (y.field === 1) img.height = Number(y.value);
              else if (y.field === 2) img.width = Number(y.value);
              else if (y.field === 3) img.colorspace = Number(y.value);
              else if (y.field === 4) img.png = y.value as Uint8Array;
            }
            image = img;
          }
        }
        e.summary.push(image ? { tag, image } : { tag, simpleValue: simple ?? NaN });
      }
    }
  }
  return e;
}
