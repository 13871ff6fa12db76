import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/errors.js';
import { decodeArrow, listColumn } from '../../src/protocol/arrow.js';
import { DEFAULT_LIMITS } from '../../src/protocol/constants.js';
import { decodeHeaderFrame, encodeHeaderFrame } from '../../src/protocol/header.js';
import { decodeMessage } from '../../src/protocol/message.js';
import { streamLayout } from '../../src/protocol/payload.js';
import { Tensor, numel } from '../../src/protocol/tensor.js';

const vec = (f: string) => new URL(`../../protocols/vectors/${f}`, import.meta.url);
const HEADERS = JSON.parse(readFileSync(vec('headers.json'), 'utf8')) as Array<{
  name: string;
  kind: 'req';
  flags: number;
  header: Record<string, unknown>;
  frame: string;
}>;
const FUZZ = JSON.parse(readFileSync(vec('fuzz.json'), 'utf8')) as Array<{
  name: string;
  socket: string;
  frames: string[];
  expect: string;
  decode: string;
}>;

describe('shared header vectors (encoded by Python)', () => {
  for (const v of HEADERS) {
    it(`${v.name}: decodes to the same value and re-encodes byte-equal`, () => {
      const frame = Buffer.from(v.frame, 'hex');
      const d = decodeHeaderFrame(frame);
      expect(d.kind).toBe(v.kind);
      expect(d.flags).toBe(v.flags);
      expect(d.header).toEqual(v.header);
      expect(Buffer.from(encodeHeaderFrame(v.kind, v.header, v.flags)).toString('hex')).toBe(v.frame);
    });
  }
});

describe('fuzz corpus at decode level', () => {
  it('has at least 60 malformed inputs', () => {
    expect(FUZZ.filter((c) => c.expect !== 'accept').length).toBeGreaterThanOrEqual(60);
  });
  for (const c of FUZZ) {
    it(`${c.name} → ${c.decode}`, () => {
      const frames = c.frames.map((h) => Buffer.from(h, 'hex'));
      if (c.decode === 'accept') {
        expect(() => decodeMessage(frames, DEFAULT_LIMITS)).not.toThrow();
      } else {
        let err: unknown;
        try {
          decodeMessage(frames, DEFAULT_LIMITS);
        } catch (e) {
          err = e;
        }
        expect(err, 'must throw').toBeInstanceOf(ProtocolError);
        expect((err as ProtocolError).wireCode).toBe(c.decode);
      }
    });
  }
});

describe('Arrow interop files', () => {
  it('reads the stream pyarrow wrote, including fixed-shape-tensor metadata', () => {
    const want = JSON.parse(readFileSync(vec('arrow-expected.json'), 'utf8'));
    const t = decodeArrow(readFileSync(vec('arrow-from-pyarrow.arrows')));
    const lc = listColumn(t, 'tokens');
    expect(Array.from(lc.offsets)).toEqual([0, 3, 3, 4]);
    expect(Array.from(lc.values)).toEqual(want.tokens.flat());
    expect(Array.from(t.getChild('reward')!.toArray() as Float32Array)).toEqual(want.reward);
    expect(t.getChild('text')!.toArray()).toEqual(want.text);
    const f = t.schema.fields.find((x) => x.name === 'img')!;
    expect(f.metadata.get('ARROW:extension:name')).toBe('arrow.fixed_shape_tensor');
    expect(JSON.parse(f.metadata.get('ARROW:extension:metadata')!).shape).toEqual(want.img.shape.slice(1));
    const values = t.getChild('img')!.data[0].children[0].values as Float32Array;
    expect(Array.from(values)).toEqual(want.img.values);
  });
});

describe('codec details', () => {
  it('stream layout matches the Python one', () => {
    expect(
      streamLayout([
        { nm: 'a', enc: 'raw', n: 3 },
        { nm: 'b', enc: 'raw', n: 0 },
        { nm: 'c', enc: 'raw', n: 65 },
        { nm: 'd', enc: 'raw', n: 1 },
      ]),
    ).toEqual({ offsets: [0, 64, 64, 192], total: 193 });
  });
  it('numel rejects overflow and bad dims', () => {
    expect(numel([2, 3, 4])).toBe(24);
    expect(numel([])).toBe(1);
    expect(() => numel([2 ** 31, 2 ** 31, 2 ** 31])).toThrow(/overflows/);
    expect(() => numel([-1])).toThrow(/invalid dimension/);
  });
  it('Tensor checks its byte count and dtype/array agreement', () => {
    expect(() => new Tensor('f32', [3], new Uint8Array(8))).toThrow(/needs 12 bytes/);
    expect(() => Tensor.from(new Uint16Array(2))).toThrow(/ambiguous/);
    expect(() => Tensor.from(new Float32Array(2), [2], 'i32')).toThrow(/does not match/);
  });
});
