/**
 * Live fuzzing: every malformed input of protocols/vectors/fuzz.json goes to a real sidecar rank,
 * which must answer a typed error (or accept) and keep serving; then chunk-stream and state-machine
 * violations, a tiny-message burst and an oversize message.
 */
import { readFileSync } from 'node:fs';
import * as zmq from 'zeromq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sidecar, Tensor } from '../../src/sidecar/index.js';
import { Flags } from '../../src/protocol/constants.js';
import { decodeHeaderFrame, encodeHeaderFrame } from '../../src/protocol/header.js';
import { Controller } from '../../src/sidecar/controller.js';

const FUZZ = JSON.parse(readFileSync(new URL('../../protocols/vectors/fuzz.json', import.meta.url), 'utf8')) as Array<{
  name: string;
  socket: 'ctrl' | 'data';
  frames: string[];
  expect: string;
}>;

let sc: Sidecar;
let ctl: Controller;
const inbox: Array<{ kind: string; header: Record<string, unknown> }> = [];

beforeAll(async () => {
  // A stall limit short enough to test, long enough that an open stream's next chunk (sent at once)
  // is not taken for a stall on a busy machine.
  sc = await Sidecar.spawn({ threads: 1, limits: { stallMs: 5000 } });
  ctl = sc._controller;
  ctl._tap = (kind, header) => {
    if (kind === 'res' || kind === 'err') inbox.push({ kind, header });
  };
});
afterAll(async () => {
  await sc?.close();
});

/** Waits for the rank's answer to a raw message: an err (with or without re) or a res for `id`. */
async function answer(
  id: number | undefined,
  timeoutMs = 120_000,
): Promise<{ kind: string; header: Record<string, unknown> }> {
  const t0 = Date.now();
  for (;;) {
    const i = inbox.findIndex((m) =>
      m.kind === 'err' ? m.header.re === undefined || m.header.re === id : m.header.re === id,
    );
    if (i >= 0) return inbox.splice(i, 1)[0];
    if (Date.now() - t0 > timeoutMs) throw new Error(`no answer within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function stillServing(): Promise<void> {
  const r = await sc.call('echo', { alive: true }, { x: Tensor.from(Float32Array.of(1, 2)) }, { deadlineMs: 60_000 });
  expect(r.args).toEqual({ alive: true });
}

describe('fuzz corpus against a live rank', () => {
  for (const c of FUZZ) {
    it(`${c.name} → ${c.expect}`, async () => {
      inbox.length = 0;
      await ctl._sendRaw(
        0,
        c.frames.map((h) => Buffer.from(h, 'hex')),
        c.socket,
      );
      const a = await answer(1);
      if (c.expect === 'accept') {
        expect(a.kind, JSON.stringify(a.header)).toBe('res');
      } else {
        expect(a.kind).toBe('err');
        expect((a.header.err as { code: string }).code, (a.header.err as { msg: string }).msg).toBe(c.expect);
      }
      await stillServing();
    });
  }
});

function req(id: number, b: unknown[], st: { sid: number; tot: number }) {
  return encodeHeaderFrame('req', { id, op: 'tensor.echo', a: {}, b, st }, Flags.streamed);
}
const chunk = (sid: number, seq: number, off: number, last = false) =>
  encodeHeaderFrame('chunk', last ? { sid, seq, off, last } : { sid, seq, off });

describe('broken chunk streams', () => {
  const desc = [{ nm: 'x', enc: 'raw', n: 8, dt: 'u8', sh: [8] }];
  const cases: Array<[string, (sid: number) => Uint8Array[][]]> = [
    ['out-of-order seq', (s) => [[chunk(s, 1, 0), Buffer.alloc(4)]]],
    [
      'duplicate seq',
      (s) => [
        [chunk(s, 0, 0), Buffer.alloc(4)],
        [chunk(s, 0, 4, true), Buffer.alloc(4)],
      ],
    ],
    [
      'missing seq',
      (s) => [
        [chunk(s, 0, 0), Buffer.alloc(4)],
        [chunk(s, 2, 4, true), Buffer.alloc(4)],
      ],
    ],
    [
      'overlapping offset',
      (s) => [
        [chunk(s, 0, 0), Buffer.alloc(4)],
        [chunk(s, 1, 2, true), Buffer.alloc(4)],
      ],
    ],
    ['chunk past the buffer', (s) => [[chunk(s, 0, 0, true), Buffer.alloc(12)]]],
    ['last before complete', (s) => [[chunk(s, 0, 0, true), Buffer.alloc(4)]]],
    ['complete but not last', (s) => [[chunk(s, 0, 0), Buffer.alloc(8)]]],
    ['two frames in a chunk', (s) => [[chunk(s, 0, 0, true), Buffer.alloc(4), Buffer.alloc(4)]]],
  ];
  let id = 100;
  let sid = 100;
  for (const [name, make] of cases) {
    it(`${name} → bad_request for that request, rank keeps serving`, async () => {
      inbox.length = 0;
      const myId = ++id;
      const mySid = ++sid;
      await ctl._sendRaw(0, [req(myId, desc, { sid: mySid, tot: 8 })], 'data');
      for (const m of make(mySid)) await ctl._sendRaw(0, m, 'data');
      const a = await answer(myId);
      expect(a.kind).toBe('err');
      expect((a.header.err as { code: string }).code).toBe('bad_request');
      expect(a.header.re).toBe(myId);
      await stillServing();
    });
  }

  it('tot that does not match the descriptors → bad_request', async () => {
    inbox.length = 0;
    await ctl._sendRaw(0, [req(300, desc, { sid: 300, tot: 9 })], 'data');
    const a = await answer(300);
    expect((a.header.err as { code: string }).code).toBe('bad_request');
    await stillServing();
  });

  it('a stream id reused while open → bad_request', async () => {
    inbox.length = 0;
    await ctl._sendRaw(0, [req(301, desc, { sid: 301, tot: 8 })], 'data');
    await ctl._sendRaw(0, [req(302, desc, { sid: 301, tot: 8 })], 'data');
    const a = await answer(302);
    expect((a.header.err as { code: string }).code).toBe('bad_request');
    await ctl._sendRaw(0, [chunk(301, 0, 0, true), Buffer.alloc(8)], 'data');
    expect((await answer(301)).kind).toBe('res'); // the first stream still completes
  });

  it('a stream that stops sending is dropped after the stall timeout', async () => {
    inbox.length = 0;
    await ctl._sendRaw(0, [req(303, desc, { sid: 303, tot: 8 })], 'data');
    await ctl._sendRaw(0, [chunk(303, 0, 0), Buffer.alloc(4)], 'data');
    const a = await answer(303);
    expect((a.header.err as { msg: string }).msg).toMatch(/stalled/);
    await stillServing();
  });
});

describe('state machine and resources', () => {
  it('a duplicate request id in flight is refused, cancel for unknown ids is ignored', async () => {
    inbox.length = 0;
    // Long enough that the second copy, sent right after, surely finds the first in flight.
    const sleep = encodeHeaderFrame('req', { id: 500, op: 'debug.sleep', a: { seconds: 5 } });
    await ctl._sendRaw(0, [sleep]);
    await ctl._sendRaw(0, [sleep]);
    const dup = await answer(500);
    expect(dup.kind).toBe('err');
    expect((dup.header.err as { msg: string }).msg).toMatch(/already in flight/);
    await ctl._sendRaw(0, [encodeHeaderFrame('cancel', { re: 999_999 })]);
    expect((await answer(500)).kind).toBe('res');
    await stillServing();
  });

  it('heartbeat floods are harmless', async () => {
    for (let i = 0; i < 2000; i++) void ctl._sendRaw(0, [encodeHeaderFrame('hb', { state: 'ok' })]);
    await stillServing();
  });

  it('serves a burst of 10^4 tiny requests without losing one', async () => {
    const n = 10_000;
    const rs = await Promise.all(Array.from({ length: n }, (_, i) => sc.call('echo', { i })));
    expect(rs.map((r) => r.args.i)).toEqual(Array.from({ length: n }, (_, i) => i));
  });

  it('a message over the size limit is refused with too_large and the rank keeps serving', async () => {
    inbox.length = 0;
    const n = ctl.limits.chunkBytes + ctl.limits.maxHeaderBytes + 128 * 1024;
    await ctl._sendRaw(0, [
      encodeHeaderFrame('req', {
        id: 600,
        op: 'tensor.echo',
        a: {},
        b: [{ nm: 'x', enc: 'raw', n, dt: 'u8', sh: [n] }],
      }),
      Buffer.alloc(n),
    ]);
    const a = await answer(600);
    expect((a.header.err as { code: string }).code).toBe('too_large');
    await stillServing();
  });
});

describe('controller side: a misbehaving rank', () => {
  it('answers req-before-hello, bad versions and duplicate hellos with typed errors', async () => {
    const c = new Controller({ ctrlEndpoint: 'tcp://127.0.0.1:*', dataEndpoint: 'tcp://127.0.0.1:*', plaintext: true });
    // Bind on ephemeral ports and find them.
    await c.start();
    const ep = (c as unknown as { ctrl: zmq.Router }).ctrl.lastEndpoint!;
    const d = new zmq.Dealer({ linger: 0, routingId: 'fake-rank-1' });
    d.connect(ep);
    const next = async () => decodeHeaderFrame((await d.receive())[0]);
    await d.send([encodeHeaderFrame('req', { id: 1, op: 'echo', a: {} })]);
    let m = await next();
    expect(m.kind).toBe('err');
    expect((m.header.err as { msg: string }).msg).toMatch(/before hello/);
    const hello = { wire: [2, 3], minor: 0, caps: [], rank: 0, world: 1, inc: 'x' };
    await d.send([encodeHeaderFrame('hello', hello)]);
    m = await next();
    expect((m.header.err as { code: string }).code).toBe('unsupported_version');
    await d.send([encodeHeaderFrame('hello', { ...hello, wire: [1, 1] })]);
    m = await next();
    expect(m.kind).toBe('welcome');
    await d.send([encodeHeaderFrame('hello', { ...hello, wire: [1, 1] })]);
    m = await next();
    expect((m.header.err as { msg: string }).msg).toMatch(/duplicate hello/);
    await d.send([Buffer.from('garbage!')]);
    m = await next();
    expect((m.header.err as { code: string }).code).toBe('bad_request');
    // A reply that fails validation still settles the call it answers.
    const p = c.call('echo', {});
    const reqMsg = decodeHeaderFrame((await d.receive())[0]);
    expect(reqMsg.kind).toBe('req');
    const bad = Buffer.concat([
      encodeHeaderFrame('res', { re: reqMsg.header.id as number }).subarray(0, 8),
      Buffer.from([0x82, 0xa1, 0x62, 0x91, 0x05, 0xa2, 0x72, 0x65, reqMsg.header.id as number]),
    ]);
    await d.send([bad]);
    await expect(p).rejects.toMatchObject({ code: 'bad_request' });
    d.close();
    await c.close();
  });
});
