/**
 * The SDK ↔ sidecar contract: generated files match their declarations, library code calls ops only
 * through the typed client, requests and replies are checked on both sides, errors are classes.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drift, fieldDocs, OUTPUTS, recordDocs, render } from '../../protocols/tools/make-contract.js';
import { OPS } from '../../src/contract/ops.js';
import {
  BadRequestError,
  InternalError,
  NotFoundError,
  OpFailedError,
  RankLostError,
  SidecarError,
  WIRE_ERROR_CODES,
} from '../../src/errors.js';
import { invoke } from '../../src/sidecar/client.js';
import { Sidecar, Tensor } from '../../src/sidecar/index.js';
import { buildTinyJanus, writeTinyPairUG } from '../../src/train/fixtures.js';
import { grpoSides, loadArgs, loadPairUG, pairGrpoStep, parseTrainConfig } from '../../src/train/index.js';

const ROOT = join(import.meta.dirname, '..', '..');

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

describe('declared once, generated for both languages', () => {
  it('the committed schemas, TS constants and Python module equal what the declarations generate', async () => {
    expect(await drift()).toEqual([]);
  });

  it('docs/ops.md is one of the drift-checked outputs and documents every op from the catalogue', async () => {
    expect(Object.values(OUTPUTS)).toContain('docs/ops.md');
    const md = (await render()).opsDoc;
    for (const [name, d] of Object.entries(OPS)) {
      expect(md).toContain(`\n## ${name}\n\nScope: **${'scope' in d ? d.scope : 'rank'}**. ${d.doc}.`);
    }
    // A field's JSDoc (zod drops it at run time) reaches the reference from the catalogue's source.
    expect(md).toContain(
      '| `free` | boolean | `false` | Drop the rollouts after this step (the last inner iteration) without another round trip. |',
    );
    expect(md).toMatch(/\| `model` \| \[LoadModel\]\(#loadmodel\) \| required \|/);
    // A record's fields carry the comments of the config field they are derived from, under their TS
    // names with the wire's beside them; family options (map keys) and metric names stay as declared.
    expect(md).toContain(
      '| `microBatch` (wire `micro_batch`) | int | `8` | ≥ 1; Trajectories per forward/backward (gradient accumulation inside a step). |',
    );
    expect(md).toContain('| `cudaVersion` (wire `cuda_version`) | string \\| null |  |');
    expect(md).toContain('| `lora_alpha` | number | `16` | > 0 |');
    expect(md).toContain('| `grad_norm` | number |  |');
  });

  it('field JSDoc is read from the args and reply literals of each op', () => {
    const src = `export const OPS = {
      'a.b': op({
        doc: 'x',
        args: z.strictObject({
          /** Where it goes. */
          dir: userPath,
          n: int,
        }),
        reply: z.looseObject({
          /** Bytes written. */
          size: uint,
        }),
      }),
    } as const satisfies Record<string, OpDecl>;`;
    expect(fieldDocs(src)).toEqual({ 'a.b': { args: { dir: 'Where it goes.' }, reply: { size: 'Bytes written.' } } });
  });

  it('a record derived from another inherits its field JSDoc under snake_case keys; nested objects do not leak', () => {
    const config = `export const Model = z
      .object({
        /** The weights. */
        modelPath: z.string(),
        inner: z.object({
          /** Not a field of Model. */
          deep: z.number(),
        }),
      })
      .strict();`;
    const ops = `export const Load = wireRecord(Model.omit({ inner: true })).extend({
      /** Added on the wire. */
      seed: uint,
    });`;
    const docs = recordDocs([config, ops]);
    expect(docs.Model).toEqual({ modelPath: 'The weights.', model_path: 'The weights.' });
    expect(docs.Load).toEqual({ modelPath: 'The weights.', model_path: 'The weights.', seed: 'Added on the wire.' });
  });

  it('library code names no op by string outside the typed client', () => {
    const offenders = tsFiles(join(ROOT, 'src'))
      .filter((f) => !f.endsWith(join('sidecar', 'client.ts')))
      .flatMap((f) =>
        readFileSync(f, 'utf8')
          .split('\n')
          .map((line, i) => ({ f, i, line }))
          .filter(
            ({ line }) =>
              /\.call\(\s*['"`]/.test(line) && !line.trim().startsWith('*') && !line.trim().startsWith('//'),
          ),
      )
      .map(({ f, i, line }) => `${f}:${i + 1}: ${line.trim()}`);
    expect(offenders).toEqual([]);
  });

  it('every built-in op has a declaration with a doc line, and every declared op a typed method', async () => {
    const sc = await Sidecar.spawn({ threads: 1 });
    try {
      const info = await sc.info();
      const builtin = info.ops.filter((o) => !o.startsWith('test.'));
      expect(builtin.sort()).toEqual(Object.keys(OPS).sort());
      expect(info.plugins.adapter).toContain('janus');
      expect(info.plugins.reward).toEqual(expect.arrayContaining(['hps', 'shapes', 'brightness']));
      expect(info.plugins.backbone).toEqual(expect.arrayContaining(['resnet50', 'pixels']));
      expect(info.plugins.tiny).toContain('janus');
      expect(info.plugins.codec).toEqual(['shapes']); // registered by the ShapesWorld package itself
      for (const d of Object.values(OPS)) expect(d.doc.length).toBeGreaterThan(10);
      expect(typeof sc.train.update).toBe('function');
      expect(typeof sc.kernels.gemmNt).toBe('function');
      expect(typeof sc.manifest.parquetToArrow).toBe('function');
    } finally {
      await sc.close();
    }
  });
});

describe('requests and replies are checked at the boundary', () => {
  let sc: Sidecar;
  beforeAll(async () => {
    sc = await Sidecar.spawn({ threads: 1 });
  });
  afterAll(async () => {
    await sc?.close();
  });

  it('the client refuses an unknown, missing or mistyped field by name before sending', async () => {
    let sent = 0;
    const raw = async () => {
      sent++;
      return { args: {}, tensors: {}, tables: {} };
    };
    const unknown = await invoke(raw, 'debug.sleep', { seconds: 1, sleeep: 2 } as never).catch((e) => e);
    expect(unknown).toBeInstanceOf(BadRequestError);
    expect(unknown.message).toMatch(/unknown field\(s\) sleeep/);
    expect(unknown.detail.field).toBe('sleeep');
    const missing = await invoke(raw, 'debug.sleep', {} as never).catch((e) => e);
    expect(missing).toBeInstanceOf(BadRequestError);
    expect(missing.detail.field).toBe('seconds');
    const typed = await invoke(raw, 'train.update', { handles: {}, loss: { epsLow: 'x' }, estSeed: 0 } as never).catch(
      (e) => e,
    );
    expect(typed.detail.field).toBe('loss.epsLow');
    const payload = await invoke(
      raw,
      'train.update',
      { handles: {}, loss: {}, estSeed: 0 },
      { adv_und: Tensor.from(new Float64Array(2)) },
    ).catch((e) => e);
    expect(payload.message).toMatch(/payload 'adv_und' must have dtype f32, got f64/);
    expect(sent).toBe(0);
  });

  it('the sidecar refuses an unknown, missing or mistyped field by name (a raw caller bypassing the client)', async () => {
    const unknown = await sc.call('debug.sleep', { seconds: 0, sleeep: 1 }).catch((e) => e);
    expect(unknown).toBeInstanceOf(BadRequestError);
    expect(unknown.message).toMatch(/debug.sleep: unknown field\(s\) sleeep$/);
    expect(unknown.detail).toMatchObject({ field: 'sleeep', type: 'BadRequest' });
    const missing = await sc.call('kernels.set_rows', {}).catch((e) => e);
    expect(missing.message).toMatch(/missing field\(s\) handle/);
    const typed = await sc
      .call('train.update', { handles: {}, loss: { eps_low: 'x', norm: 'side' }, est_seed: 0 })
      .catch((e) => e);
    expect(typed).toBeInstanceOf(BadRequestError);
    expect(typed.detail.field).toBe('loss.eps_low');
    const payload = await sc.call('kernels.put', {}, { m: Tensor.from(new Float64Array(4), [2, 2]) }).catch((e) => e);
    expect(payload.message).toMatch(/payload 'm' must have dtype f32, got f64/);
    // still serving, and a declared default fills a field the raw caller left out
    expect((await sc.call('debug.sleep', { seconds: 0 })).args.slices).toBe(0);
  });

  it("user paths cross the wire resolved against the caller's working directory", async () => {
    const sent: Record<string, unknown>[] = [];
    const raw = async (_op: string, args: Record<string, unknown>) => {
      sent.push(args);
      return {
        args: { path: 'x', width: 1, height: 1, elapsed_s: 0, key: 'k', dim: 1, device: 'cpu', kind: 'resnet50' },
        tensors: {},
        tables: {},
      };
    };
    await invoke(raw, 'train.grid', { handle: 'h', path: join('samples', 'grid.png') }).catch(() => undefined); // the fake reply fits no op
    expect(sent[0].path).toBe(join(process.cwd(), 'samples', 'grid.png'));
    await invoke(raw, 'features.backbone', { backbone: { kind: 'resnet50', weights: 'resnet50.pth' } }).catch(
      () => undefined,
    );
    expect((sent[1].backbone as { weights: string }).weights).toBe(join(process.cwd(), 'resnet50.pth'));
    await invoke(raw, 'train.und_rollout', {
      n: 1,
      items: [
        { imagePath: '/abs/a.png', text: 'q' },
        { imagePath: 'rel/b.png', text: 'q' },
      ],
      sampling: { seed: 0 },
    }).catch(() => undefined);
    expect((sent[2].items as Array<{ image_path: string }>).map((i) => i.image_path)).toEqual([
      '/abs/a.png',
      join(process.cwd(), 'rel', 'b.png'),
    ]);
  });

  it('a reply field renamed by the sidecar fails on arrival, naming the field', async () => {
    const metrics = {
      loss: 0.1,
      grad_norm: 1,
      lr: 1e-3,
      update_tokens: 4,
      update_s: 0.01,
      optimizer_step: 1,
      elapsed_s: 0.01,
      'und/clip_frac': 0,
    };
    const ok = await invoke(async () => ({ args: metrics, tensors: {}, tables: {} }), 'train.update', {
      handles: {},
      loss: {},
      estSeed: 0,
    });
    expect(ok.args['und/clip_frac']).toBe(0);
    const { 'und/clip_frac': _, ...rest } = metrics;
    const renamed = { ...rest, 'und/clipfrac': 0 };
    const err = await invoke(async () => ({ args: renamed, tensors: {}, tables: {} }), 'train.update', {
      handles: {},
      loss: {},
      estSeed: 0,
    }).catch((e) => e);
    expect(err).toBeInstanceOf(InternalError);
    expect(err.message).toMatch(/train\.update reply does not match the contract.*und\/clipfrac/);
  });
});

describe('the adapter declares what it can do; the trainer decides from it', () => {
  it('PairGRPO sides from capabilities; an SFT-only adapter is refused with a pointer to SFT', () => {
    expect(grpoSides(['und_rollout', 'gen_rollout', 'logprobs_und', 'logprobs_gen', 'sft'])).toEqual({
      und: true,
      gen: true,
    });
    expect(grpoSides(['und_rollout', 'logprobs_und', 'gen_rollout'])).toEqual({ und: true, gen: false });
    expect(() => grpoSides(['sft'])).toThrow(/neither side.*supervised fine-tuning: train\.sft/);
  });

  it('a step with only the understanding side rolls out, scores and updates that side alone', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pairuni-contract-'));
    const sc = await Sidecar.spawn({ threads: 1 });
    try {
      const model = await buildTinyJanus(sc, join(dir, 'tiny'));
      const data = writeTinyPairUG(join(dir, 'data'), 4);
      const cfg = parseTrainConfig({
        data,
        out: join(dir, 'out'),
        model: { path: model, device: 'cpu' },
        batchPairs: 2,
        und: { k: 2, maxNewTokens: 2 },
        gen: { k: 2, reward: { name: 'brightness' } },
        log: { tensorboard: false },
      });
      const loaded = await sc.train.load(loadArgs(cfg));
      expect(loaded.args.capabilities).toEqual(
        expect.arrayContaining(['und_rollout', 'gen_rollout', 'logprobs_und', 'logprobs_gen', 'sft']),
      );
      const m = await pairGrpoStep(sc, cfg, loadPairUG(data), 0, { sides: { und: true, gen: false } });
      expect(m['gen/reward']).toBe(0);
      expect(m['tokens/rollout']).toBeGreaterThan(0);
      expect(m.lr).toBeGreaterThan(0);
      expect((await sc.info()).handles).toBe(0); // the rollout was freed with the last update
    } finally {
      await sc.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('errors are classes', () => {
  it('one SidecarError subclass per wire code, built by SidecarError.generate', () => {
    for (const code of WIRE_ERROR_CODES) {
      const e = SidecarError.generate(code, 'x', true, { type: 'T' });
      expect(e).toBeInstanceOf(SidecarError);
      expect(e.code).toBe(code);
      expect(e.constructor).not.toBe(SidecarError);
      expect(e.name).toMatch(/Error$/);
    }
    expect(SidecarError.generate('rank_lost', 'gone')).toBeInstanceOf(RankLostError);
    expect(SidecarError.generate('not_found', 'gone')).toBeInstanceOf(NotFoundError);
  });

  it("a handler's exception arrives as OpFailedError with the Python type and message in detail", async () => {
    const sc = await Sidecar.spawn({ threads: 1 });
    try {
      const e = await sc.debug.fail({ kind: 'file', msg: 'no such thing' }).catch((x) => x);
      expect(e).toBeInstanceOf(OpFailedError);
      expect(e.detail.type).toBe('FileNotFoundError');
      expect(e.message).toMatch(/no such thing/);
    } finally {
      await sc.close();
    }
  });
});
