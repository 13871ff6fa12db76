/**
 * Command lines that cannot work are refused at once, in one line that names what is wrong, with
 * nothing written: another family's options in a training config, a non-decimal number, a missing
 * required flag (exit 2, as for `train`), an unknown or conflicting demo family, options the Bagel
 * demo would ignore, an --out the demo cannot use, a directory given as the PairUG file.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_MODELS, runDemo } from '../../../src/demo/demo.js';
import { ConfigError } from '../../../src/errors.js';
import { writeTinyPairUG } from '../../../src/train/fixtures.js';
import { pairuni as run } from './_pairuni.js';

const dir = mkdtempSync(join(tmpdir(), 'pairuni-refusals-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(dir, `out-${n++}`);

const pairuni = (...argv: string[]) => run(argv, { stderrWrites: true });

let data: string;
beforeAll(() => {
  data = writeTinyPairUG(join(dir, 'data'), 4);
});

/** A training config file (its --out is a fresh, not yet existing directory). */
function config(over: Record<string, unknown>): { file: string; out: string } {
  const out = fresh();
  const file = join(dir, `config-${n++}.json`);
  writeFileSync(file, JSON.stringify({ data, out, steps: 2, batchPairs: 1, sidecar: { threads: 1 }, ...over }));
  return { file, out };
}

describe("train: another family's options are refused at config parse, naming the field; nothing is written", () => {
  it.each<[string, Record<string, unknown>, string]>([
    [
      'a Janus load option in a DiMOO config',
      { model: { adapter: 'dimoo', path: DEMO_MODELS.dimoo, device: 'cpu', options: { detach_uncond: true } } },
      'model.options.detach_uncond: not an option of the dimoo family (it takes code_dir, und_template, gen_template, und_system_prompt, gen_system_prompt, p_mask_prompt, estimator, image_size, lora_rank, lora_alpha, lora_targets)',
    ],
    [
      'a Janus load option under gen.options',
      { model: { path: DEMO_MODELS.janus, device: 'cpu' }, gen: { options: { rollout_engine: 'reference' } } },
      'gen.options.rollout_engine: not an option of the janus family (it takes none)',
    ],
    [
      'a DiMOO option value of the wrong kind',
      { model: { adapter: 'dimoo', path: DEMO_MODELS.dimoo, device: 'cpu' }, und: { options: { steps: 0 } } },
      'und.options.steps: Too small: expected number to be >=1',
    ],
  ])(
    '%s',
    async (_what, over, issue) => {
      const { file, out } = config(over);
      const r = await pairuni('train', '--config', file, '--quiet');
      expect(r.code).toBe(1);
      expect(r.err).toEqual([`pairuni train: ConfigError [config]: ${file} is not a valid training config: ${issue}`]);
      expect(existsSync(out)).toBe(false);
    },
    120_000,
  );
});

describe('one number parser for every command: decimal digits only', () => {
  // The data file is missing, so a value taken as a number would fail later with a DataError instead.
  it.each([['0x2'], ['1e1'], [' 2'], ['2.0'], ['Infinity']])('train --steps %j', async (v) => {
    const { file, out } = config({ data: join(dir, 'missing.jsonl'), model: { path: DEMO_MODELS.janus } });
    const r = await pairuni('train', '--config', file, '--steps', v, '--quiet');
    expect(r.code).toBe(1);
    expect(r.err).toEqual([`pairuni train: ConfigError [config]: --steps must be an integer >= 1, got '${v}'`]);
    expect(existsSync(out)).toBe(false);
  });

  it('train --ranks 0x2 and demo --steps 0x2 say the same', async () => {
    const { file } = config({ data: join(dir, 'missing.jsonl'), model: { path: DEMO_MODELS.janus } });
    expect((await pairuni('train', '--config', file, '--ranks', '0x2')).err).toEqual([
      "pairuni train: ConfigError [config]: --ranks must be an integer >= 1, got '0x2'",
    ]);
    const out = fresh();
    expect((await pairuni('demo', '--out', out, '--quick', '--steps', '0x2')).err).toEqual([
      "pairuni demo: ConfigError [config]: --steps must be an integer >= 1, got '0x2'",
    ]);
    expect(existsSync(out)).toBe(false);
  });

  it('pair --threshold takes decimals and exponents but not hex', async () => {
    const base = [
      'pair',
      '--u',
      join(dir, 'missing.jsonl'),
      '--g',
      join(dir, 'missing.jsonl'),
      '--out',
      fresh(),
      '--quiet',
    ];
    expect((await pairuni(...base, '--threshold', '0x0')).err).toEqual([
      "pairuni pair: ConfigError [config]: --threshold must be a number in [-1, 1], got '0x0'",
    ]);
    // 5e-1 and .5 parse: the next refusal is --k's
    for (const t of ['5e-1', '.5', '-0.25']) {
      expect((await pairuni(...base, '--threshold', t, '--k', '0')).err).toEqual([
        "pairuni pair: ConfigError [config]: --k must be an integer >= 1, got '0'",
      ]);
    }
  });
});

describe('a missing required flag: one line, exit 2, for every command', () => {
  it.each<[string[], string]>([
    [['pair', '--u', 'u.jsonl'], "pairuni pair: --g, --out are required (see 'pairuni pair --help')"],
    [['pair', '--u', 'u.jsonl', '--g', 'g.jsonl'], "pairuni pair: --out is required (see 'pairuni pair --help')"],
    [['embed', '--g', 'g.jsonl'], "pairuni embed: --u is required (see 'pairuni embed --help')"],
  ])('%j', async (argv, line) => {
    const r = await pairuni(...argv);
    expect(r).toEqual({ code: 2, out: [], err: [line] });
  });
});

describe('demo refusals', () => {
  it('an unknown --family lists every family, bagel included', async () => {
    const out = fresh();
    const r = await pairuni('demo', '--family', 'lumina', '--out', out);
    expect(r).toEqual({
      code: 1,
      out: [],
      err: ["pairuni demo: ConfigError [config]: --family must be one of janus, dimoo, bagel, got 'lumina'"],
    });
    expect(existsSync(out)).toBe(false);
  });

  it('--family bagel refuses --model, --parallel, --eval-every and --loggers, which it would ignore', async () => {
    // --out is a file: had the flags been ignored, the demo would have failed on it instead.
    const file = join(dir, 'a-file');
    writeFileSync(file, 'x');
    const why =
      'cannot be used with --family bagel: it trains the shipped tiny Bagel (assets/tiny-bagel-shapes), one run at a time, evaluating before and after';
    expect((await pairuni('demo', '--family', 'bagel', '--out', file, '--model', DEMO_MODELS.janus)).err).toEqual([
      `pairuni demo: ConfigError [config]: --model ${why}`,
    ]);
    expect((await pairuni('demo', '--family', 'bagel', '--out', file, '--parallel', '2')).err).toEqual([
      `pairuni demo: ConfigError [config]: --parallel ${why}`,
    ]);
    expect(
      (await pairuni('demo', '--family', 'bagel', '--out', file, '--eval-every', '1', '--loggers', 'wandb')).err,
    ).toEqual([`pairuni demo: ConfigError [config]: --eval-every and --loggers ${why}`]);
  });

  it('demo --loggers with an unknown tracker and --eval-every below 0: one line naming it, nothing written', async () => {
    const out = join(dir, 'never-loggers');
    const bad = await pairuni('demo', '--quick', '--out', out, '--loggers', 'jsonl,wandbb');
    expect(bad.code).toBe(1);
    expect(bad.err).toHaveLength(1);
    expect(bad.err[0]).toMatch(/^pairuni demo: ConfigError \[config\]: .*loggers\.1: unknown logger "wandbb"/);
    const neg = await pairuni('demo', '--quick', '--out', out, '--eval-every', '-1');
    expect(neg.err).toHaveLength(1);
    expect(neg.err[0]).toMatch(/--eval-every/);
    expect(existsSync(out)).toBe(false);
  });

  it('an --out that is a file (Bagel) or lies under a file (Janus): one line naming it, no stack trace', async () => {
    const file = join(dir, 'out-file');
    writeFileSync(file, 'x');
    const bagel = await pairuni('demo', '--family', 'bagel', '--quick', '--out', file);
    expect(bagel).toEqual({
      code: 1,
      out: [],
      err: [
        `pairuni demo: RunStateError [config]: cannot use out ${file} as the demo directory: it is a file, not a directory; choose another --out`,
      ],
    });
    const under = join(file, 'demo');
    const janus = await pairuni('demo', '--quick', '--out', under);
    expect(janus).toEqual({
      code: 1,
      out: [],
      err: [
        `pairuni demo: RunStateError [config]: cannot use out ${under} as the demo directory: ${file} is a file, not a directory; choose another --out`,
      ],
    });
  });

  it('--family dimoo with a Janus model names both families; nothing runs, nothing is written', async () => {
    const out = fresh();
    // Should the demo start anyway, stop it at its first log line so the test stays short.
    const ac = new AbortController();
    const lines: string[] = [];
    const err = await runDemo({
      out,
      family: 'dimoo',
      model: DEMO_MODELS.janus,
      quick: true,
      signal: ac.signal,
      log: (l) => (lines.push(l), ac.abort()),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe(
      `demo: family dimoo was asked for, but ${DEMO_MODELS.janus} is a janus model (pairuni_model.json: family "janus"); pass a dimoo model or leave out the family`,
    );
    expect(lines).toEqual([]);
    expect(existsSync(out)).toBe(false);
    const r = await pairuni('demo', '--family', 'janus', '--model', DEMO_MODELS.dimoo, '--quick', '--out', out);
    expect(r.code).toBe(1);
    expect(r.err).toEqual([
      `pairuni demo: ConfigError [config]: demo: family janus was asked for, but ${DEMO_MODELS.dimoo} is a dimoo model (pairuni_model.json: family "dimoo"); pass a janus model or leave out the family`,
    ]);
    expect(existsSync(out)).toBe(false);
  }, 300_000);
});

describe('train --data <a directory>', () => {
  it('says it is a directory (and which PairUG files it holds), not that it does not exist', async () => {
    const pairDir = join(dir, 'pairug');
    mkdirSync(pairDir, { recursive: true });
    const { file, out } = config({ model: { path: DEMO_MODELS.janus } });
    const empty = await pairuni('train', '--config', file, '--data', pairDir, '--quiet');
    expect(empty).toMatchObject({
      code: 1,
      err: [`pairuni train: DataError [data]: PairUG file ${pairDir} is a directory, not a file`],
    });
    writeFileSync(join(pairDir, 'pairs.jsonl'), '');
    const holding = await pairuni('train', '--config', file, '--data', pairDir, '--quiet');
    expect(holding.err).toEqual([
      `pairuni train: DataError [data]: PairUG file ${pairDir} is a directory, not a file (it holds ${join(pairDir, 'pairs.jsonl')}: pass one of them)`,
    ]);
    expect(readdirSync(dir)).not.toContain(out.split('/').pop());
  });
});
