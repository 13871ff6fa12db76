/**
 * One naming convention: camelCase in TS, snake_case on the wire, converted by the op's schema at the
 * client boundary only. Field names convert; record keys (family options, reward config, sizes,
 * per-category maps), a loose object's pass-through keys and metric names do not.
 */
import { describe, expect, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import { camel, type CamelInput, fromWireKeys, toWireKeys, tsPath } from '../../src/contract/casing.js';
import { ModelConfig, OptimConfig, UndConfig, GenConfig, LossConfig } from '../../src/contract/config.js';
import { OPS, PlanReply, RECORDS, type OpArgs, type OpReply } from '../../src/contract/ops.js';
import { snake } from '../../src/contract/wire.js';
import { BadRequestError, InternalError } from '../../src/errors.js';
import type { Payloads } from '../../src/protocol/payload.js';
import { invoke } from '../../src/sidecar/client.js';
import type { Sidecar } from '../../src/sidecar/index.js';

/** A raw call that records what would travel and answers `reply`. */
function recorder(reply: Record<string, unknown> = {}) {
  const sent: Array<Record<string, unknown>> = [];
  const raw = async (_op: string, args: Record<string, unknown>, _p: Payloads) => {
    sent.push(args);
    return { args: reply, tensors: {}, tables: {} };
  };
  return { sent, raw };
}

describe('the TS spelling of a wire key', () => {
  it('is camel(key), the same at the type level', () => {
    expect(camel('est_seed')).toBe('estSeed');
    expect(camel('fixed_shape_tensor_check')).toBe('fixedShapeTensorCheck');
    expect(camel('g_eval_distinct_prompts')).toBe('gEvalDistinctPrompts');
    expect(camel('handle')).toBe('handle');
    expectTypeOf<keyof OpArgs<'tensor.echo'>>().toEqualTypeOf<'fixedShapeTensorCheck'>();
    expectTypeOf<keyof OpArgs<'train.grid'>>().toEqualTypeOf<'handle' | 'path' | 'nrow' | 'maxImages'>();
    expectTypeOf<OpReply<'shapesworld.overlap'>['gEvalDistinctPrompts']>().toEqualTypeOf<number>();
  });

  it('of every config field on the wire is the config field itself (a config value is already its TS form)', () => {
    for (const rec of [ModelConfig, OptimConfig, UndConfig, GenConfig, LossConfig])
      for (const k of Object.keys(rec.shape)) expect(camel(snake(k))).toBe(k);
  });

  it('is one name per wire key in every object of every op and record, at any depth (no two read the same in TS)', () => {
    const schemas = [...Object.values(OPS).flatMap((d) => [d.args, d.reply]), ...Object.values(RECORDS)] as z.ZodType[];
    let objects = 0;
    const visit = (j: unknown): void => {
      if (Array.isArray(j)) return j.forEach(visit);
      if (typeof j !== 'object' || j === null) return;
      const props = (j as { properties?: Record<string, unknown> }).properties;
      if (props) {
        objects++;
        const names = Object.keys(props).map(camel);
        expect(new Set(names).size, Object.keys(props).join(', ')).toBe(names.length);
      }
      Object.values(j).forEach(visit);
    };
    for (const s of schemas) visit(z.toJSONSchema(s, { unrepresentable: 'any' }));
    expect(objects).toBeGreaterThan(Object.keys(OPS).length); // every op's args or reply is an object (echo's are maps)
  });
});

describe('requests: TS args become wire args at the client', () => {
  it('converts declared keys at every depth, and leaves record keys and values as data', async () => {
    const { sent, raw } = recorder();
    await invoke(raw, 'train.und_rollout', {
      n: 2,
      items: [{ imagePath: '/abs/a.png', text: 'q' }],
      sampling: {
        seed: 3,
        maxNewTokens: 8,
        oldLogp: 'rollout',
        estSeeds: [0, 1],
        options: { und_system_prompt: 'S', blockLength: 4 },
      },
    }).catch(() => undefined); // the empty reply fits no op: only the request matters here
    expect(sent[0]).toEqual({
      n: 2,
      items: [{ image_path: '/abs/a.png', text: 'q' }],
      sampling: {
        seed: 3,
        max_new_tokens: 8,
        old_logp: 'rollout',
        est_seeds: [0, 1],
        temperature: 1,
        options: { und_system_prompt: 'S', blockLength: 4 },
      },
    });
    await invoke(raw, 'shapesworld.build', { out: '/abs/w', sizes: { u_train: 32, gEval: 8 } }).catch(() => undefined);
    expect(sent[1]).toEqual({ out: '/abs/w', seed: 0, sizes: { u_train: 32, gEval: 8 } });
    await invoke(raw, 'train.prepare_reward', { reward: { name: 'hps', config: { checkpoint_path: '/c' } } }).catch(
      () => undefined,
    );
    expect(sent[2]).toEqual({ reward: { name: 'hps', config: { checkpoint_path: '/c' } } });
  });

  it('refuses a wire (snake_case) name written in TS, naming the TS one, before anything is sent', async () => {
    const { sent, raw } = recorder();
    const e = await invoke(raw, 'train.update', { handles: {}, loss: {}, est_seed: 0 } as never).catch((x) => x);
    expect(e).toBeInstanceOf(BadRequestError);
    expect(e.message).toBe("train.update: est_seed: TS fields are camelCase: write 'estSeed', not 'est_seed'");
    expect(e.detail).toMatchObject({ field: 'estSeed', side: 'client' });
    const nested = await invoke(raw, 'train.und_rollout', {
      n: 1,
      items: [{ image_path: '/a.png', text: 'q' }],
      sampling: { seed: 0 },
    } as never).catch((x) => x);
    expect(nested.message).toBe(
      "train.und_rollout: items.0.image_path: TS fields are camelCase: write 'imagePath', not 'image_path'",
    );
    expect(sent).toEqual([]);
  });

  it('names a mistyped or missing field by its TS path', async () => {
    const { raw } = recorder();
    const e = await invoke(raw, 'train.und_rollout', {
      n: 1,
      items: [{ imagePath: '/a.png', text: 'q' }],
      sampling: { seed: 0, maxNewTokens: 0 },
    }).catch((x) => x);
    expect(e.detail.field).toBe('sampling.maxNewTokens');
    const m = await invoke(raw, 'train.update', { handles: {}, loss: {} } as never).catch((x) => x);
    expect(m.detail.field).toBe('estSeed');
    expect(tsPath(OPS['shapesworld.build'].args, ['sizes', 'u_train'])).toEqual(['sizes', 'u_train']);
    expect(tsPath(OPS['plan'].reply, ['bytes', 'fsdp_buffers'])).toEqual(['bytes', 'fsdpBuffers']);
  });
});

describe('replies: wire replies become TS replies at the client', () => {
  const plan = {
    family: 'janus',
    preset: 'tiny',
    model_dir: null,
    mode: 'rl',
    request: { gpu_gib: 80, train_modules: ['language_model'] },
    image_tokens: 16,
    bytes: {
      parameters: 1,
      gradients: 2,
      optimizer: 3,
      reference: 0,
      activations: 4,
      fsdp_buffers: 5,
      gathered_weights: 6,
      rollout: 7,
      update_peak: 8,
      rollout_peak: 9,
      total: 10,
      host: 0,
    },
    usable: 11,
    fits: true,
    counts: { params: 12, trainable: 13 },
    suggestion: null,
    verdict: 'fits',
  };

  it('converts declared keys; a loose object passes its undeclared keys and records keep theirs', async () => {
    const r = await invoke(recorder(plan).raw, 'plan', { family: 'janus', preset: 'tiny' });
    expect(r.args.bytes).toMatchObject({ fsdpBuffers: 5, gatheredWeights: 6, updatePeak: 8, rolloutPeak: 9 });
    expect(r.args).toMatchObject({
      modelDir: null,
      imageTokens: 16,
      request: { gpu_gib: 80, train_modules: ['language_model'] },
    });
    expect(Object.keys(r.args)).not.toContain('model_dir');
    expect(fromWireKeys(PlanReply, PlanReply.parse(plan))).toEqual(r.args);
    const info = {
      sidecar: '0',
      python: '3',
      torch: '2',
      cuda: false,
      cuda_version: null,
      devices: [],
      threads: 1,
      packages: { torch_vision: null },
      ops: [],
      plugins: {},
      unavailable: {},
      handles: 0,
      policy: null,
      extra_key: 1,
    };
    const i = await invoke(recorder(info).raw, 'info', {});
    expect(i.args).toMatchObject({ cudaVersion: null, packages: { torch_vision: null }, extra_key: 1 });
  });

  it("names a reply's missing field as the sidecar should have sent it", async () => {
    const e = await invoke(recorder({ dir: '/d', elapsed_s: 0.1 }).raw, 'train.save', { dir: '/d' }).catch((x) => x);
    expect(e).toBeInstanceOf(InternalError);
    expect(e.detail.field).toBe('optimizer_step');
  });

  it('keeps the names of a metric record as they are logged', async () => {
    const metrics = {
      loss: 0.5,
      grad_norm: 2,
      lr: 1e-6,
      update_tokens: 4,
      update_s: 0.1,
      optimizer_step: 1,
      elapsed_s: 0.2,
      'und/clip_frac': 0.25,
    };
    const r = await invoke(recorder(metrics).raw, 'train.update', { handles: {}, loss: {}, estSeed: 0 });
    expect(r.args).toEqual(metrics);
    expectTypeOf<OpReply<'train.update'>['grad_norm']>().toEqualTypeOf<number>();
    expectTypeOf<OpReply<'shapesworld.eval'>['und_accuracy']>().toEqualTypeOf<number>();
  });
});

describe('types', () => {
  it('refuse the wire spelling in TS and accept the TS one', () => {
    expectTypeOf<OpReply<'info'>['cudaVersion']>().toEqualTypeOf<string | null>();
    expectTypeOf<OpReply<'plan'>['bytes']['fsdpBuffers']>().toEqualTypeOf<number>();
    expectTypeOf<OpArgs<'train.load'>['model']['trainModules']>().toEqualTypeOf<string[] | undefined>();
    expectTypeOf<OpArgs<'train.und_rollout'>['sampling']['options']>().toEqualTypeOf<
      Record<string, unknown> | undefined
    >();
    expectTypeOf<CamelInput<(typeof OPS)['shapesworld.build']['args']>['sizes']>().toEqualTypeOf<
      Record<string, number> | undefined
    >();
    // Never called: the compiler checks the calls a user would write on a live sidecar.
    const calls = (sc: Sidecar) => [
      // @ts-expect-error a wire name in TS
      sc.train.update({ handles: {}, loss: {}, est_seed: 0 }),
      // @ts-expect-error a wire name inside a nested record
      sc.train.update({ handles: {}, loss: { eps_low: 0.2 }, estSeed: 0 }),
      // @ts-expect-error a wire name inside a list of items
      sc.train.sft({ examples: [{ side: 'und', image_path: '/a.png', text: 'q' }] }),
      sc.train.update({ handles: {}, loss: { epsLow: 0.2 }, estSeed: 0, gradCosine: true }),
      sc.shapesworld.build({ out: 'w', sizes: { u_train: 8 } }),
    ];
    expectTypeOf(calls).toBeFunction();
  });
});
