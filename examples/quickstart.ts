/**
 * Quickstart: start a PyTorch sidecar, look at its environment, move a tensor and an Arrow table
 * across, and shut down cleanly.   node --import tsx examples/quickstart.ts
 */
import { tableFromArrays } from 'apache-arrow';
import { Sidecar, SidecarError, Tensor } from '../src/index.js';

const sc = await Sidecar.spawn();
try {
  const info = await sc.info();
  console.log(`sidecar ${info.sidecar}: python ${info.python}, torch ${info.torch}, CUDA ${info.cuda}, ${info.ops.length} ops`);

  // Dense tensors travel raw (any dtype incl. bf16); large ones are chunked automatically.
  const x = Tensor.from(Float32Array.from({ length: 1 << 20 }, (_, i) => i % 7), [1024, 1024]);
  const { args } = await sc.call('tensor.sum', {}, { x });
  console.log('sum computed by torch:', (args.sums as Record<string, number>).x);

  // Tabular / ragged data travels as Arrow IPC.
  const batch = tableFromArrays({ reward: Float32Array.of(0.1, 0.9, 0.4), id: Int32Array.of(1, 2, 3) });
  const echoed = await sc.call('tensor.echo', {}, { batch });
  console.log('pyarrow saw:', JSON.stringify((echoed.args.seen as Record<string, unknown>).batch));

  // Errors are typed: a code you can switch on, plus the sidecar's message.
  try {
    await sc.call('debug.fail', { kind: 'file', msg: 'checkpoint.safetensors' });
  } catch (e) {
    if (e instanceof SidecarError) console.log(`typed error: ${e.code} (${e.detail.type}): ${e.message}`);
  }

  // Long calls can be cancelled or given a deadline.
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 100);
  await sc.call('debug.sleep', { seconds: 10 }, {}, { signal: ac.signal }).catch((e: SidecarError) => console.log('cancelled:', e.code));
} finally {
  await sc.close();
}
