import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  EventWriter,
  SESSION_STATUS,
  crc32c,
  decodeEvent,
  encodeEvent,
  maskedCrc32c,
  readRecords,
} from '../../../src/train/index.js';
import { frameRecord } from '../../../src/train/tfevents.js';

describe('CRC32C', () => {
  it('matches the standard check values (RFC 3720 B.4)', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
  });
  it('masks as TFRecord does: rotr15 + 0xa282ead8', () => {
    const c = 0xe3069283;
    const want = ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
    expect(maskedCrc32c(new TextEncoder().encode('123456789'))).toBe(want);
  });
});

describe('Event protobuf and TFRecord framing', () => {
  it('encodes the exact bytes of a scalar event', () => {
    const b = encodeEvent({ wallTime: 1.5, step: 3, summary: [{ tag: 'a', simpleValue: 2 }] });
    // 09 <f64 1.5> 10 03 2a 0a [0a 08 [0a 01 'a' 15 <f32 2.0>]]
    expect(Array.from(b)).toEqual([
      0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x10, 0x03, 0x2a, 0x0a, 0x0a, 0x08, 0x0a, 0x01, 0x61, 0x15, 0, 0, 0, 0x40,
    ]);
  });
  it('frames with length + masked CRCs and round-trips', () => {
    const data = encodeEvent({ wallTime: 10, step: 2 ** 40, summary: [{ tag: 'loss/und', simpleValue: -0.25 }] });
    const rec = frameRecord(data);
    const dv = new DataView(rec.buffer);
    expect(Number(dv.getBigUint64(0, true))).toBe(data.length);
    expect(dv.getUint32(8, true)).toBe(maskedCrc32c(rec.subarray(0, 8)));
    expect(dv.getUint32(12 + data.length, true)).toBe(maskedCrc32c(data));
    const [back] = readRecords(rec);
    expect(decodeEvent(back)).toEqual({
      wallTime: 10,
      step: 2 ** 40,
      summary: [{ tag: 'loss/und', simpleValue: -0.25 }],
    });
    const bad = rec.slice();
    bad[14] ^= 1;
    expect(() => readRecords(bad)).toThrow(/bad data CRC/);
    expect(() => readRecords(rec.subarray(0, rec.length - 2))).toThrow(/truncated/);
  });
  it('encodes a SessionLog (event field 7: status, checkpoint_path, msg) and reads it back', () => {
    const e = { wallTime: 2, step: 5, sessionLog: { status: SESSION_STATUS.start, checkpointPath: 'c', msg: 'm' } };
    // 09 <f64 2.0> 10 05 3a 08 [08 01 12 01 'c' 1a 01 'm']
    expect(Array.from(encodeEvent(e))).toEqual([
      0x09, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x10, 0x05, 0x3a, 0x08, 0x08, 0x01, 0x12, 0x01, 0x63, 0x1a, 0x01, 0x6d,
    ]);
    expect(decodeEvent(encodeEvent(e))).toEqual(e);
  });
  it('every new writer gets a new file that sorts after the existing ones, even within one second', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pairuni-tb-'));
    try {
      const paths = [0, 1, 2].map(() => {
        const w = new EventWriter(dir);
        w.close();
        return w.path;
      });
      expect(new Set(paths).size).toBe(3);
      expect([...paths].sort()).toEqual(paths);
      expect(readdirSync(dir).sort()).toEqual(paths.map((p) => basename(p)));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('the writer produces a parseable file: version record, scalars, images', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pairuni-tb-'));
    try {
      const w = new EventWriter(dir);
      w.scalars(1, { 'und/reward': 0.5, skip: NaN });
      w.image(1, 'samples', { height: 2, width: 3, colorspace: 3, png: new Uint8Array([1, 2, 3]) });
      w.close();
      const events = readRecords(readFileSync(w.path)).map(decodeEvent);
      expect(w.path).toMatch(/events\.out\.tfevents\.\d+\./);
      expect(events[0].fileVersion).toBe('brain.Event:2');
      expect(events[1].step).toBe(1);
      expect(events[1].summary).toEqual([{ tag: 'und/reward', simpleValue: 0.5 }]);
      const img = events[2].summary![0] as {
        tag: string;
        image: { height: number; width: number; colorspace: number; png: Uint8Array };
      };
      expect(img.tag).toBe('samples');
      expect([img.image.height, img.image.width, img.image.colorspace, ...img.image.png]).toEqual([2, 3, 3, 1, 2, 3]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
