/**
 * Sidecar tour: start a PyTorch sidecar, look at its environment, move a tensor and an Arrow table
 * across, and shut down cleanly.   node --import tsx examples/sidecar-tour.ts
 */
import { tableFromArrays } from 'apache-arrow';
import { CancelledError, OpFailedError, Sidecar, Tensor } from 'pairuni';

const sc = await Sidecar.spawn();
try {
  const info = await sc.info();
  console.log(
    `sidecar ${info.sidecar}: python ${info.python}, torch ${info.torch}, CUDA ${info.cuda}, ${info.ops.length} ops`,
  );
  console.log(`plug-ins: adapters ${info.plugins.adapter.join(', ')}; rewards ${info.plugins.reward.join(', ')}`);

  // Dense tensors travel raw (any dtype incl. bf16); large ones are chunked automatically.
  const x = Tensor.from(
    Float32Array.from({ length: 1 << 20 }, (_, i) => i % 7),
    [1024, 1024],
  );
  // Built-in ops are typed methods (src/contract/ops.ts): args and reply are checked on both sides.
  const { args } = await sc.tensor.sum({}, { x });
  console.log('sum computed by torch:', args.sums.x);

  // Tabular / ragged data travels as Arrow IPC.
  const batch = tableFromArrays({ reward: Float32Array.of(0.1, 0.9, 0.4), id: Int32Array.of(1, 2, 3) });
  const echoed = await sc.tensor.echo({}, { batch });
  console.log('pyarrow saw:', JSON.stringify(echoed.args.seen.batch));

  // Errors are classes, one per code; a handler's exception keeps its Python type in `detail.type`.
  try {
    await sc.debug.fail({ kind: 'file', msg: 'checkpoint.safetensors' });
  } catch (e) {
    if (e instanceof OpFailedError) console.log(`typed error: ${e.code} (${e.detail.type}): ${e.message}`);
  }

  // Long calls can be cancelled or given a deadline.
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 100);
  await sc.debug
    .sleep({ seconds: 10 }, {}, { signal: ac.signal })
    .catch((e) => console.log('cancelled:', e instanceof CancelledError));
} finally {
  await sc.close();
}
