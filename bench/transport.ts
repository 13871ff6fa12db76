/**
 * Transport benchmark (issue 2): small-RPC latency, one-way and echo throughput for 1 MiB / 64 MiB /
 * 1 GiB float32 tensors, warm memcpy in the same run, pythonia as the peer baseline for 64 MiB, and
 * peak extra memory of a 1 GiB transfer. `npm run bench -- transport [--quick]`
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { Sidecar, Tensor, resolvePython } from '../src/sidecar/index.js';

const MiB = 1024 * 1024;

function vm(pid: number | 'self', key: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Resets VmHWM to the current RSS (Linux: writing 5 to clear_refs), so a peak is measured per phase. */
function resetHwm(pid: number | 'self'): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

async function timeIt(reps: number, fn: () => Promise<unknown>): Promise<number> {
  await fn(); // warm-up: first-touch page faults and lazy imports are not steady-state throughput
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    ts.push(performance.now() - t0);
  }
  return pct(ts, 50);
}

function memcpyMs(bytes: number, reps: number): number {
  const src = Buffer.alloc(bytes, 1);
  const dst = Buffer.alloc(bytes);
  src.copy(dst);
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    src.copy(dst);
    ts.push(performance.now() - t0);
  }
  return pct(ts, 50);
}

async function pythoniaBaseline(bytes: number): Promise<{ numberArrayMs: number; base64Ms: number }> {
  process.env.PYTHON_BIN = resolvePython();
  const { python, py } = (await import('pythonia')) as unknown as {
    python: ((m: string) => Promise<unknown>) & { exit(): void };
    py: (s: TemplateStringsArray, ...v: unknown[]) => Promise<unknown>;
  };
  try {
    const f = new Float32Array(bytes / 4).fill(1);
    // The plain way: a JS number[] becomes a Python list, then a tensor-ready numpy array.
    let t0 = performance.now();
    const n1 = await py`int(__import__('numpy').asarray(${Array.from(f)}, dtype='float32').size)`;
    const numberArrayMs = performance.now() - t0;
    // The fastest way we found: the raw bytes as one base64 string.
    t0 = performance.now();
    const n2 =
      await py`int(__import__('numpy').frombuffer(__import__('base64').b64decode(${Buffer.from(f.buffer).toString('base64')}), dtype='float32').size)`;
    const base64Ms = performance.now() - t0;
    if (n1 !== f.length || n2 !== f.length)
      throw new Error(`pythonia returned ${n1}/${n2} elements, expected ${f.length}`);
    return { numberArrayMs, base64Ms };
  } finally {
    python.exit();
  }
}

export async function main(args: string[]): Promise<Record<string, unknown>> {
  const quick = args.includes('--quick');
  const out: Record<string, unknown> = { machine: `${process.platform}/${process.arch}, node ${process.version}` };
  const sc = await Sidecar.spawn();
  try {
    // Small RPC round trip: the raw call (sidecar-side contract check only), the typed client (request
    // and reply also checked in TS), on a free-form op (echo) and a declared one (handles.free), interleaved.
    const probes: Record<string, () => Promise<unknown>> = {
      rpc: () => sc.call('echo', { i: 1 }),
      rpc_typed: () => sc.echo({ i: 1 }),
      rpc_declared_raw: () => sc.call('handles.free', { handles: ['none'] }),
      rpc_declared_typed: () => sc.handles.free({ handles: ['none'] }),
    };
    const lat: Record<string, number[]> = Object.fromEntries(Object.keys(probes).map((k) => [k, []]));
    for (let i = 0; i < 300; i++) for (const f of Object.values(probes)) await f();
    const n = quick ? 1000 : 5000;
    for (let i = 0; i < n; i++) {
      for (const [k, f] of Object.entries(probes)) {
        const t0 = performance.now();
        await f();
        lat[k].push(performance.now() - t0);
      }
    }
    for (const k of Object.keys(probes)) {
      out[`${k}_p50_us`] = Math.round(pct(lat[k], 50) * 1000);
      out[`${k}_p99_us`] = Math.round(pct(lat[k], 99) * 1000);
    }
    out.typed_client_cost_pct = +(
      (100 * ((out.rpc_declared_typed_p50_us as number) - (out.rpc_declared_raw_p50_us as number))) /
      (out.rpc_declared_raw_p50_us as number)
    ).toFixed(1);
    console.error(
      `small RPC: p50 ${out.rpc_p50_us} us (typed ${out.rpc_typed_p50_us}), declared op p50 raw ${out.rpc_declared_raw_p50_us} / typed ${out.rpc_declared_typed_p50_us} us`,
    );

    out.memcpy_64MiB_ms = +memcpyMs(64 * MiB, 10).toFixed(2);
    out.memcpy_GBps = +((64 * MiB) / (out.memcpy_64MiB_ms as number) / 1e6).toFixed(2);

    const sizes: Array<[string, number, number]> = [
      ['1MiB', MiB, quick ? 20 : 100],
      ['64MiB', 64 * MiB, quick ? 5 : 15],
    ];
    if (!quick) sizes.push(['1GiB', 1024 * MiB, 3]);
    for (const [label, bytes, reps] of sizes) {
      const x = Tensor.from(new Float32Array(bytes / 4).fill(1));
      const one = await timeIt(reps, () => sc.call('tensor.recv', {}, { x }));
      const echo = await timeIt(reps, async () => {
        const r = await sc.call('tensor.echo', {}, { x });
        if (r.tensors.x.nbytes !== bytes) throw new Error('echo lost bytes');
      });
      out[`oneway_${label}_ms`] = +one.toFixed(2);
      out[`oneway_${label}_GBps`] = +(bytes / one / 1e6).toFixed(3);
      out[`echo_${label}_ms`] = +echo.toFixed(2);
      out[`echo_${label}_GBps`] = +((2 * bytes) / echo / 1e6).toFixed(3);
      console.error(`${label}: one-way ${one.toFixed(1)} ms, echo ${echo.toFixed(1)} ms`);
    }
    out.oneway_64MiB_vs_memcpy = +((out.memcpy_64MiB_ms as number) / (out.oneway_64MiB_ms as number)).toFixed(3);
  } finally {
    await sc.close();
  }

  if (!quick) {
    // Peak extra memory of a 1 GiB transfer, in a fresh sidecar so earlier peaks do not count.
    const x = Tensor.from(new Float32Array((1024 * MiB) / 4).fill(1));
    const sc2 = await Sidecar.spawn();
    try {
      await sc2.call('echo', {});
      const pid = sc2.pid!;
      const GiB = 1024 * MiB;
      const phase = async (fn: () => Promise<void>) => {
        (globalThis as { gc?: () => void }).gc?.();
        const ok = resetHwm(pid) && resetHwm('self');
        const py0 = vm(pid, 'VmRSS');
        const node0 = vm('self', 'VmRSS');
        await fn();
        return {
          py: +((vm(pid, 'VmHWM') - py0) / GiB).toFixed(2),
          node: +((vm('self', 'VmHWM') - node0) / GiB).toFixed(2),
          hwmReset: ok,
        };
      };
      const one = await phase(async () => {
        await sc2.call('tensor.recv', {}, { x });
      });
      const echo = await phase(async () => {
        const r = await sc2.call('tensor.echo', {}, { x });
        if (r.tensors.x.nbytes !== GiB) throw new Error('echo lost bytes');
      });
      out.peak_extra_1GiB_hwm_reset = one.hwmReset && echo.hwmReset;
      out.peak_extra_py_oneway_1GiB_x = one.py;
      out.peak_extra_node_oneway_1GiB_x = one.node;
      out.peak_extra_py_echo_1GiB_x = echo.py;
      out.peak_extra_node_echo_1GiB_x = echo.node;
    } finally {
      await sc2.close();
    }
  }

  const pb = await pythoniaBaseline(quick ? 4 * MiB : 64 * MiB);
  const scale = quick ? 16 : 1; // quick mode measures 4 MiB and scales linearly (pythonia is throughput-bound)
  out.pythonia_64MiB_number_array_ms = Math.round(pb.numberArrayMs * scale);
  out.pythonia_64MiB_base64_ms = Math.round(pb.base64Ms * scale);
  out.speedup_vs_pythonia = +((out.pythonia_64MiB_number_array_ms as number) / (out.oneway_64MiB_ms as number)).toFixed(
    1,
  );
  out.speedup_vs_pythonia_base64 = +(
    (out.pythonia_64MiB_base64_ms as number) / (out.oneway_64MiB_ms as number)
  ).toFixed(1);
  out.targets = {
    rpc_p50_us_max: 250,
    rpc_p99_us_max: 2000,
    oneway_64MiB_vs_memcpy_min: 0.15,
    speedup_vs_pythonia_min: 200,
    peak_extra_1GiB_x_max: 2,
  };
  return out;
}
