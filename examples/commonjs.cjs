/**
 * CommonJS: a project made by `npm init -y` loads the package with require() (it ships a CommonJS
 * build next to the ESM one). Trains two PairGRPO steps on a tiny Janus and tells the SDK's errors
 * apart by class.
 *
 *   node examples/commonjs.cjs [outDir]
 */
const { mkdtempSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { ConfigError, OpFailedError, Sidecar, parseTrainConfig, train } = require('pairuni');
const { buildTinyJanus, writeTinyPairUG } = require('pairuni/testing');

async function main() {
  const out = process.argv[2] ?? mkdtempSync(join(tmpdir(), 'pairuni-example-'));
  const data = writeTinyPairUG(join(out, 'data'), 4);
  const sc = await Sidecar.spawn({ threads: 1 });
  let model;
  try {
    model = await buildTinyJanus(sc, join(out, 'tiny-janus'));
    // A Python exception in an op arrives as a typed error.
    await sc.debug.fail({ kind: 'file', msg: 'checkpoint.safetensors' }).catch((e) => {
      if (!(e instanceof OpFailedError)) throw e;
      console.log(`OpFailedError (${e.detail.type}): ${e.message}`);
    });
  } finally {
    await sc.close();
  }

  const input = {
    data,
    out: join(out, 'run'),
    model: { path: model, device: 'cpu' },
    steps: 2,
    batchPairs: 2,
    und: { k: 2, maxNewTokens: 4 },
    gen: { k: 2, reward: { name: 'brightness' } },
  };
  try {
    // A misspelled key fails to type-check (checkJs, or in TypeScript) and is refused by name at run time.
    // @ts-expect-error: 'stpes'
    parseTrainConfig({ ...input, stpes: 2 });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    console.log(`ConfigError: ${e.message}`);
  }
  const run = await train(parseTrainConfig(input), {
    onLog: () => undefined,
    onStep: (m) => console.log(`step ${m.step}: r_gen ${m['gen/reward']?.toFixed(3)} loss ${m.loss.toExponential(2)}`),
  });
  console.log(`checkpoint: ${run.checkpoint}`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
