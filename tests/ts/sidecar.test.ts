import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  tableFromArrays,
  Table,
  vectorFromArray,
  Field,
  Schema,
  Float32,
  Int32,
  List,
  Utf8,
  makeData,
  type FixedSizeList,
  RecordBatch,
  Struct,
} from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sidecar, Tensor, bf16ToF32, f32ToBf16, resolvePython } from '../../src/sidecar/index.js';
import { SidecarError } from '../../src/errors.js';
import { fixedShapeTensorField, listColumn } from '../../src/protocol/arrow.js';
import type { DType } from '../../src/protocol/constants.js';

let sc: Sidecar;
beforeAll(async () => {
  sc = await Sidecar.spawn({ threads: 1 });
});
afterAll(async () => {
  await sc?.close();
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof SidecarError) return e.code;
    throw e;
  }
  throw new Error('expected a rejection');
}

describe('Sidecar basics', () => {
  it('reports its environment and ops', async () => {
    const info = await sc.info();
    expect(info.torch).toMatch(/^2\.13/);
    expect(info.ops).toEqual(expect.arrayContaining(['info', 'echo', 'tensor.echo', 'tensor.sum']));
    expect(sc.ranks).toHaveLength(1);
    expect(sc.ranks[0].alive).toBe(true);
  });

  it('echoes args exactly, including nested values and unicode', async () => {
    const args = { a: 1, b: -2.5, c: 'héllo ✓', d: [1, [2, { e: null }]], f: true, big: 2 ** 53 - 1 };
    const r = await sc.call('echo', args);
    expect(r.args).toEqual(args);
  });

  it('answers unknown ops and failing handlers with typed errors, then keeps serving', async () => {
    expect(await codeOf(sc.call('no.such.op'))).toBe('unknown_op');
    try {
      await sc.call('debug.fail', { kind: 'value', msg: 'boom' });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(SidecarError);
      expect((e as SidecarError).code).toBe('op_failed');
      expect((e as SidecarError).detail.type).toBe('ValueError');
      expect((e as SidecarError).message).toContain('boom');
    }
    expect(await codeOf(sc.call('tensor.make', { shape: 'nope' }))).toBe('bad_request');
    expect((await sc.call('echo', { ok: 1 })).args).toEqual({ ok: 1 });
  });
});

const DTYPE_SAMPLES: Record<DType, () => Tensor> = {
  bool: () => Tensor.from(Uint8Array.of(1, 0, 1, 1, 0, 1), [2, 3], 'bool'),
  u8: () => Tensor.from(Uint8Array.of(0, 1, 254, 255, 7), [5]),
  i8: () => Tensor.from(Int8Array.of(-128, -1, 0, 1, 127), [5]),
  i16: () => Tensor.from(Int16Array.of(-32768, -2, 0, 3, 32767), [5]),
  i32: () => Tensor.from(Int32Array.of(-(2 ** 31), -5, 0, 6, 2 ** 31 - 1), [5]),
  i64: () => Tensor.from(BigInt64Array.of(-(2n ** 62n), -7n, 0n, 8n, 2n ** 40n), [5]),
  f16: () => Tensor.from(Uint16Array.of(0x3c00, 0xc000, 0x3800, 0x0000), [2, 2], 'f16'), // 1, -2, 0.5, 0
  bf16: () => Tensor.from(Uint16Array.from([1.5, -3, 0.25, 100].map(f32ToBf16)), [4], 'bf16'),
  f32: () => Tensor.from(Float32Array.of(1.5, -2.25, 3e-8, 1e30), [4]),
  f64: () => Tensor.from(Float64Array.of(Math.PI, -Math.E, 1e-300), [3]),
};
const EXPECTED_SUMS: Record<DType, number> = {
  bool: 4,
  u8: 517,
  i8: -1,
  i16: 0,
  i32: 0,
  i64: -(2 ** 62) + 1 + 2 ** 40,
  f16: -0.5,
  bf16: 98.75,
  f32: 1e30,
  f64: Math.PI - Math.E + 1e-300,
};

/** The same tensor, but with its bytes placed at an arbitrary byte offset inside a larger buffer. */
function atOffset(t: Tensor, off: number): Tensor {
  const host = new Uint8Array(t.nbytes + off + 3);
  host.set(t.bytes, off);
  return new Tensor(t.dtype, t.shape, host.subarray(off, off + t.nbytes));
}

describe('raw tensors', () => {
  for (const dt of Object.keys(DTYPE_SAMPLES) as DType[]) {
    it(`round-trips ${dt} at aligned and odd offsets`, async () => {
      for (const off of [0, 1, 2, 3, 5]) {
        const t = atOffset(DTYPE_SAMPLES[dt](), off);
        const r = await sc.call('tensor.echo', {}, { x: t });
        const back = r.tensors.x;
        expect(back.dtype).toBe(dt);
        expect(back.shape).toEqual(t.shape);
        expect(Buffer.from(back.bytes).equals(Buffer.from(t.bytes))).toBe(true);
        expect((r.args.seen as Record<string, { dtype: string; shape: number[] }>).x.shape).toEqual([...t.shape]);
      }
      const s = await sc.call('tensor.sum', {}, { x: DTYPE_SAMPLES[dt]() });
      const got = (s.args.sums as Record<string, number>).x;
      if (dt === 'f32' || dt === 'i64')
        expect(Math.abs(got - EXPECTED_SUMS[dt]) / Math.abs(EXPECTED_SUMS[dt])).toBeLessThan(1e-6);
      else expect(got).toBeCloseTo(EXPECTED_SUMS[dt], 6);
    });
  }

  it('views typed data zero-copy when aligned and copies when not', () => {
    const f = Float32Array.of(1, 2, 3);
    const t = Tensor.from(f);
    expect(t.data).toBe(t.data);
    expect((t.data as Float32Array).buffer).toBe(f.buffer);
    const odd = atOffset(t, 1);
    expect(Array.from(odd.data as Float32Array)).toEqual([1, 2, 3]);
    expect(bf16ToF32(f32ToBf16(1.5))).toBe(1.5);
  });

  it('handles empty and 0-d tensors', async () => {
    const r = await sc.call(
      'tensor.echo',
      {},
      { e: Tensor.from(new Float32Array(0), [0, 3]), s: Tensor.from(Float64Array.of(7), []) },
    );
    expect(r.tensors.e.shape).toEqual([0, 3]);
    expect(r.tensors.s.shape).toEqual([]);
    expect((r.tensors.s.data as Float64Array)[0]).toBe(7);
  });

  it('streams a 256 MiB tensor in chunks both ways', async () => {
    const n = (256 * 1024 * 1024) / 4;
    const f = new Float32Array(n);
    for (let i = 0; i < n; i += 4096) f[i] = i % 1000;
    const before = sc.stats;
    const r = await sc.call('tensor.echo', {}, { big: Tensor.from(f), small: Tensor.from(Int32Array.of(1, 2, 3)) });
    const after = sc.stats;
    expect(after.streamsOut - before.streamsOut).toBe(1);
    expect(after.streamsIn - before.streamsIn).toBe(1);
    const back = r.tensors.big.data as Float32Array;
    expect(back.length).toBe(n);
    for (let i = 0; i < n; i += 4096 * 97) expect(back[i]).toBe(i % 1000);
    expect(back[n - 4096]).toBe((n - 4096) % 1000);
    expect(Array.from(r.tensors.small.data as Int32Array)).toEqual([1, 2, 3]);
    const s = await sc.call('tensor.sum', {}, { big: Tensor.from(f) });
    let want = 0;
    for (let i = 0; i < n; i += 4096) want += i % 1000;
    expect((s.args.sums as Record<string, number>).big).toBe(want);
  });
});

describe('Arrow payloads', () => {
  it('crosses the boundary both ways with ragged lists, strings and fixed-shape tensors', async () => {
    const tokens = [[1, 2, 3], [], [4], [5, 6]];
    const offsets = Int32Array.of(0, 3, 3, 4, 6);
    const values = Int32Array.of(1, 2, 3, 4, 5, 6);
    const listType = new List(new Field('item', new Int32(), false));
    const listData = makeData({
      type: listType,
      length: 4,
      nullCount: 0,
      valueOffsets: offsets,
      child: makeData({ type: new Int32(), length: 6, nullCount: 0, data: values }),
    });
    const img = new Float32Array(4 * 6).map((_, i) => i * 0.5);
    const tField = fixedShapeTensorField('img', [2, 3]);
    const tData = makeData({
      type: tField.type as FixedSizeList<Float32>,
      length: 4,
      nullCount: 0,
      child: makeData({ type: new Float32(), length: 24, nullCount: 0, data: img }),
    });
    const reward = makeData({
      type: new Float32(),
      length: 4,
      nullCount: 0,
      data: Float32Array.of(0.1, 0.2, 0.3, 0.4),
    });
    const text = vectorFromArray(['a', 'bé', '', 'z'], new Utf8());
    const schema = new Schema([
      new Field('tokens', listType, false),
      tField,
      new Field('reward', new Float32(), false),
      new Field('text', new Utf8(), false),
    ]);
    const structType = new Struct(schema.fields);
    const batch = new RecordBatch(
      schema,
      makeData({ type: structType, length: 4, nullCount: 0, children: [listData, tData, reward, text.data[0]] }),
    );
    const table = new Table([batch]);
    const r = await sc.call('tensor.echo', { fixed_shape_tensor_check: true }, { t: table });
    const seen = (r.args.seen as Record<string, { rows: number; columns: Record<string, Record<string, unknown>> }>).t;
    expect(seen.rows).toBe(4);
    expect(seen.columns.img.ext).toBe('arrow.fixed_shape_tensor');
    expect(seen.columns.img.ndarray_shape).toEqual([4, 2, 3]);
    expect(seen.columns.img.ndarray_sum).toBeCloseTo(
      img.reduce((a, b) => a + b, 0),
      4,
    );
    expect(seen.columns.tokens.type).toBe('list<item: int32 not null>');
    const back = r.tables.t;
    const lc = listColumn(back, 'tokens');
    expect(Array.from(lc.offsets)).toEqual([0, 3, 3, 4, 6]);
    expect(Array.from(lc.values)).toEqual(tokens.flat());
    expect(back.getChild('text')!.toArray()).toEqual(['a', 'bé', '', 'z']);
    expect(back.schema.fields[1].metadata.get('ARROW:extension:name')).toBe('arrow.fixed_shape_tensor');
    expect(JSON.parse(back.schema.fields[1].metadata.get('ARROW:extension:metadata')!)).toEqual({ shape: [2, 3] });
    expect(Array.from(back.getChild('reward')!.toArray() as Float32Array)).toEqual(
      Array.from(Float32Array.of(0.1, 0.2, 0.3, 0.4)),
    );
  });

  it('rejects tables outside the v1 subset before sending', async () => {
    const t = tableFromArrays({ x: Float32Array.of(1, 2) });
    const withNulls = new Table({ y: vectorFromArray([1, null, 3]) });
    expect(await codeOf(sc.call('tensor.echo', {}, { t: withNulls }))).toBe('bad_request');
    expect((await sc.call('tensor.echo', {}, { t })).tables.t.numRows).toBe(2);
  });
});

describe('cancellation, deadlines, progress', () => {
  it('cancels a slow op through an AbortSignal and stays responsive', async () => {
    const ac = new AbortController();
    const t0 = Date.now();
    // Bounds are a fraction of the 10 min sleep they rule out, so a busy machine cannot trip them.
    const p = sc.call('debug.sleep', { seconds: 600 }, {}, { signal: ac.signal });
    setTimeout(() => ac.abort(), 200);
    expect(await codeOf(p)).toBe('cancelled');
    expect(Date.now() - t0).toBeLessThan(60_000);
    const t1 = Date.now();
    await sc.call('echo', {});
    expect(Date.now() - t1).toBeLessThan(60_000); // the sidecar stopped the sleep instead of finishing it
    // The rank's `cancelled` answer arrives late (before the echo's reply: one socket, in order) and is dropped.
    expect(sc.stats.lateReplies).toBeGreaterThanOrEqual(1);
  });

  it('enforces deadlines on both sides', async () => {
    const t0 = Date.now();
    expect(await codeOf(sc.call('debug.sleep', { seconds: 600 }, {}, { deadlineMs: 300 }))).toBe('deadline');
    expect(Date.now() - t0).toBeLessThan(60_000);
    const r = await sc.call('echo', { after: 1 });
    expect(r.args).toEqual({ after: 1 });
  });

  it('rejects at once when the signal is already aborted', async () => {
    const ac = new AbortController();
    ac.abort();
    expect(await codeOf(sc.call('echo', {}, {}, { signal: ac.signal }))).toBe('cancelled');
  });

  it('delivers progress messages', async () => {
    const seen: number[] = [];
    await sc.call('debug.sleep', { seconds: 0.5, step: 0.05 }, {}, { onProgress: (p) => seen.push(p.done) });
    expect(seen.length).toBeGreaterThanOrEqual(2);
    expect(seen[seen.length - 1]).toBeGreaterThan(seen[0]);
  });
});

describe('rank loss', () => {
  it('a controller that stood still longer than deadMs keeps its rank: its own stall is no evidence against the rank', async () => {
    // What a busy machine does to a test process (descheduled, or a long synchronous step), made certain.
    const s = await Sidecar.spawn({ threads: 1, hbMs: 100, deadMs: 1000 });
    try {
      const lost: string[] = [];
      s.onRankLost((_r, why) => lost.push(why));
      const until = Date.now() + 3000;
      while (Date.now() < until); // no timer fires, no socket is read, no heartbeat goes out
      expect((await s.call('echo', { after: 'stall' })).args).toEqual({ after: 'stall' });
      await new Promise((r) => setTimeout(r, 1500)); // heartbeats flow again on both sides
      expect(lost).toEqual([]);
      expect(s.alive).toBe(true);
    } finally {
      await s.close();
    }
  });

  it('rejects the pending call with rank_lost soon after SIGKILL (not when the sleep ends), and a new sidecar starts', async () => {
    const s2 = await Sidecar.spawn({ threads: 1 });
    const lost: string[] = [];
    s2.onRankLost((_r, why) => lost.push(why));
    const t0 = Date.now();
    const p = s2.call('debug.sleep', { seconds: 600 });
    setTimeout(() => process.kill(s2.pid!, 'SIGKILL'), 300);
    const e = await p.catch((x) => x);
    expect(e).toBeInstanceOf(SidecarError);
    expect(e.code).toBe('rank_lost');
    expect(Date.now() - t0).toBeLessThan(60_000);
    expect(lost[0]).toMatch(/SIGKILL/);
    expect(await codeOf(s2.call('echo'))).toBe('rank_lost');
    await s2.close();
    const s3 = await Sidecar.spawn({ threads: 1 });
    expect((await s3.call('echo', { again: true })).args).toEqual({ again: true });
    await s3.close();
  });

  it('detects a lost attached (tcp) rank by heartbeat', async () => {
    const [cp, dp] = [await freePort(), await freePort()];
    const attaching = Sidecar.attach({
      endpoint: `tcp://127.0.0.1:${cp}`,
      dataEndpoint: `tcp://127.0.0.1:${dp}`,
      timeoutMs: 240_000,
      hbMs: 200,
      deadMs: 3000,
      plaintext: true,
    });
    // This checkout's sidecar, as Sidecar.spawn runs it: not whatever copy the venv has installed.
    const child = spawn(
      resolvePython(),
      ['-m', 'pairuni_sidecar', '--connect', `tcp://127.0.0.1:${cp}`, '--data', `tcp://127.0.0.1:${dp}`],
      {
        env: { ...process.env, PYTHONPATH: join(process.cwd(), 'python_sidecar') },
        stdio: 'ignore',
      },
    );
    const sc2 = await attaching;
    expect(sc2.ranks[0].pid).toBe(child.pid);
    expect((await sc2.call('echo', { tcp: 1 })).args).toEqual({ tcp: 1 });
    const t0 = Date.now();
    const p = sc2.call('debug.sleep', { seconds: 600 });
    setTimeout(() => child.kill('SIGKILL'), 200);
    expect(await codeOf(p)).toBe('rank_lost'); // a dead tcp rank never answers: only the heartbeat can tell
    expect(Date.now() - t0).toBeLessThan(60_000);
    await sc2.close();
  });
});

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

const LIFECYCLE = new URL('./fixtures/lifecycle.mts', import.meta.url).pathname;

describe('process lifecycle', () => {
  it('Node exits by itself after close and the sidecar is gone', async () => {
    // Not spawnSync: a blocked event loop sends no heartbeats to this file's sidecar, which would then leave.
    const node = spawn(process.execPath, ['--import', 'tsx', LIFECYCLE], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    node.stdout!.on('data', (b) => (stdout += b));
    const status = await new Promise<number | null>((resolve) => node.on('close', (c) => resolve(c)));
    expect(status).toBe(0);
    const pid = Number(/PID (\d+)/.exec(stdout)?.[1]);
    expect(pid).toBeGreaterThan(0);
    expect(alive(pid)).toBe(false);
  });

  it('a sidecar whose controller is SIGKILLed exits by itself (no orphans)', async () => {
    const node = spawn(process.execPath, ['--import', 'tsx', LIFECYCLE, 'hang'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const pid = await new Promise<number>((resolve, reject) => {
      let out = '';
      node.stdout!.on('data', (b) => {
        out += b;
        const m = /PID (\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      node.on('exit', () => reject(new Error('child exited early: ' + out)));
    });
    expect(alive(pid)).toBe(true);
    // The private socket directory, from the sidecar's command line (--connect ipc://DIR/ctrl).
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const sockDir = dirname(cmd[cmd.indexOf('--connect') + 1].slice('ipc://'.length));
    expect(existsSync(sockDir)).toBe(true);
    node.kill('SIGKILL');
    while (alive(pid)) await new Promise((r) => setTimeout(r, 100)); // the sidecar notices within a loop turn
    expect(existsSync(sockDir)).toBe(false); // the sidecar removed what its dead controller left
  });

  it("a terminal's Ctrl-C (SIGINT to the process group) leaves the sidecar to its controller", async () => {
    const node = spawn(process.execPath, ['--import', 'tsx', LIFECYCLE, 'sigint'], {
      stdio: ['ignore', 'pipe', 'inherit'],
      detached: true,
    });
    let out = '';
    await new Promise<void>((resolve, reject) => {
      node.stdout!.on('data', (b) => {
        out += b;
        if (out.includes('READY')) resolve();
      });
      node.on('exit', () => reject(new Error(`child exited early: ${out}`)));
    });
    const pid = Number(/PID (\d+)/.exec(out)![1]);
    process.kill(-node.pid!, 'SIGINT'); // the whole group, as a terminal does
    const code = await new Promise<number | null>((resolve) => node.on('exit', (c) => resolve(c)));
    expect(out).toContain('ECHO OK');
    expect(code).toBe(0);
    expect(alive(pid)).toBe(false); // ended by its controller's close
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
