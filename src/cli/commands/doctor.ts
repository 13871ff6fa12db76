/** `pairuni doctor`: checks Node, the ZeroMQ addon, the sidecar venv (via pythonia) and a live sidecar round trip. */
import { parseArgs } from 'node:util';
import { probe, type Problem } from '../../env/probe.js';
import { Sidecar } from '../../sidecar/index.js';

export const summary = 'check the Node + Python environment and a live sidecar round trip, with fixes';

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { python: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log('usage: pairuni doctor [--python PATH] [--json]');
    return 0;
  }
  const problems: Problem[] = [];
  const [major] = process.versions.node.split('.').map(Number);
  if (major < 20)
    problems.push({ what: `Node ${process.versions.node} is too old`, fix: 'install Node 20 or newer', fatal: true });
  let zmqVersion = '';
  try {
    zmqVersion = (await import('zeromq')).version;
  } catch (e) {
    problems.push({
      what: `the zeromq native addon does not load: ${(e as Error).message}`,
      fix: 'npm rebuild zeromq',
      fatal: true,
    });
  }
  const report = await probe({ python: values.python });
  problems.push(...report.problems);
  let live: Record<string, unknown> = {};
  if (!problems.some((p) => p.fatal)) {
    try {
      const t0 = performance.now();
      const sc = await Sidecar.spawn({ python: values.python, threads: 1 });
      const startMs = performance.now() - t0;
      const lat: number[] = [];
      for (let i = 0; i < 200; i++) {
        const t = performance.now();
        await sc.echo({ i });
        lat.push(performance.now() - t);
      }
      lat.sort((a, b) => a - b);
      live = { startMs: Math.round(startMs), rpcP50us: Math.round(lat[100] * 1000), pid: sc.pid };
      await sc.close();
    } catch (e) {
      problems.push({
        what: `a sidecar could not be started: ${(e as Error).message}`,
        fix: 'read the sidecar stderr above; then `npm install` to rebuild the venv',
        fatal: true,
      });
    }
  }
  if (values.json) {
    console.log(
      JSON.stringify({ node: process.versions.node, zeromq: zmqVersion, ...report, problems, live }, null, 2),
    );
  } else {
    const ok = (b: boolean) => (b ? 'ok ' : '!! ');
    console.log(`${ok(major >= 20)} node ${process.versions.node}, libzmq ${zmqVersion || 'missing'}`);
    console.log(`${ok(Boolean(report.pythonVersion))} python ${report.pythonVersion ?? '?'} at ${report.python}`);
    console.log(
      `${ok(Boolean(report.torch))} torch ${report.torch ?? 'missing'}, CUDA ${report.cuda ? `${report.cudaVersion} with ${report.gpus.length} GPU(s)` : 'no'}`,
    );
    for (const g of report.gpus) console.log(`     gpu ${g.index}: ${g.name}, ${g.memoryGiB} GiB`);
    console.log(
      `    packages: ${Object.entries(report.packages)
        .map(([k, v]) => `${k} ${v ?? '-'}`)
        .join(', ')}`,
    );
    console.log(`${ok(report.ops.length > 0)} sidecar ${report.sidecar ?? 'missing'}: ${report.ops.length} ops`);
    for (const [kind, names] of Object.entries(report.plugins))
      if (kind !== 'op' && names.length) console.log(`    ${kind}s: ${names.join(', ')}`); // ops: counted above
    if (live.startMs !== undefined)
      console.log(`ok  live sidecar: started in ${live.startMs} ms, echo p50 ${live.rpcP50us} us`);
    for (const p of problems) console.log(`${p.fatal ? 'ERR' : 'warn'} ${p.what}\n     fix: ${p.fix}`);
    console.log(problems.some((p) => p.fatal) ? 'doctor: problems found' : 'doctor: ready');
  }
  return problems.some((p) => p.fatal) ? 1 : 0;
}
