/**
 * The public types hold a TS project to the schema: a misspelled config key, a numeric path and a wrong
 * metric name fail to compile. `npm run typecheck` (tsconfig.json includes tests/) checks each
 * `@ts-expect-error` below: a line that stops being an error fails it as an unused directive. The
 * run-time halves check that the same mistakes from untyped input are refused by name.
 */
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  ConfigError,
  OPS,
  parseTrainConfig,
  parseUntrustedTrainConfig,
  train,
  type OpArgs,
  type PairGrpoStepMetrics,
  type Sidecar,
  type StepMetrics,
  type TrainConfig,
  type TrainConfigInput,
} from '../../src/index.js';

const base = { data: 'pairs.jsonl', out: 'run', model: { path: 'model' } } as const;

describe('config input', () => {
  it('is the schema input type: defaults optional, misspelled keys and wrong values do not compile', () => {
    expectTypeOf(parseTrainConfig).parameter(0).toEqualTypeOf<TrainConfigInput>();
    expectTypeOf(train).parameter(0).toEqualTypeOf<TrainConfigInput>();
    expectTypeOf<TrainConfigInput['steps']>().toEqualTypeOf<number | undefined>();
    // A parsed config is accepted again (train() takes either).
    expectTypeOf<TrainConfig>().toMatchTypeOf<TrainConfigInput>();

    // @ts-expect-error `stpes` is not a config key
    const stepsTypo: TrainConfigInput = { ...base, stpes: 2 };
    // @ts-expect-error `modle` is not a config key (and `model` is missing)
    const modelTypo: TrainConfigInput = { data: 'pairs.jsonl', out: 'run', modle: { path: 'model' } };
    // @ts-expect-error `batch_pairs` is the wire's spelling; the config's is `batchPairs`
    const snake: TrainConfigInput = { ...base, batch_pairs: 4 };
    // @ts-expect-error a nested key: `maxNewToken` for `maxNewTokens`
    const nested: TrainConfigInput = { ...base, und: { maxNewToken: 8 } };
    // @ts-expect-error `mode` is one of PAIR_MODES
    const mode: TrainConfigInput = { ...base, mode: 'sqrt' };

    // The same mistakes from untyped input: a ConfigError naming the key.
    expect(() => parseUntrustedTrainConfig(stepsTypo)).toThrow(ConfigError);
    expect(() => parseUntrustedTrainConfig(stepsTypo)).toThrow(/stpes/);
    expect(() => parseUntrustedTrainConfig(modelTypo)).toThrow(/modle/);
    expect(() => parseUntrustedTrainConfig(snake)).toThrow(/batch_pairs/);
    expect(() => parseUntrustedTrainConfig(nested)).toThrow(/maxNewToken/);
    expect(() => parseUntrustedTrainConfig(mode)).toThrow(/mode/);
    expect(parseTrainConfig({ ...base, steps: 2 }, '/base')).toMatchObject({
      steps: 2,
      batchPairs: 16,
      data: '/base/pairs.jsonl',
    });
  });
});

describe('path arguments', () => {
  it('are strings in the op argument types, and a number does not compile', () => {
    expectTypeOf<OpArgs<'models.tiny'>['dir']>().toEqualTypeOf<string>();
    expectTypeOf<OpArgs<'train.save'>['dir']>().toEqualTypeOf<string>();
    expectTypeOf<OpArgs<'train.load'>['resumeDir']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<OpArgs<'manifest.parquet_to_arrow'>>().toEqualTypeOf<{ path: string; out: string }>();
    expectTypeOf<NonNullable<OpArgs<'features.backbone'>['backbone']['weights']>>().toEqualTypeOf<string>();

    // Never called: the compiler checks the calls a user would write on a live sidecar.
    const calls = (sc: Sidecar) => [
      // @ts-expect-error a numeric path
      sc.models.tiny({ dir: 42 }),
      // @ts-expect-error a numeric path
      sc.train.save({ dir: 42 }),
      sc.train.sft({
        examples: [
          // @ts-expect-error a numeric path inside a list of items
          { side: 'und', imagePath: 7, text: 'q' },
        ],
      }),
      sc.train.export({ dir: 'out/model' }),
    ];
    expectTypeOf(calls).toBeFunction();
    // @ts-expect-error a numeric path in an argument record
    const args: OpArgs<'train.save'> = { dir: 42 };

    // From untyped input (`sc.call`, JavaScript) the client's check refuses it by field.
    const r = OPS['train.save'].args.safeParse(args);
    expect(r.success).toBe(false);
    expect(r.error?.issues[0].path).toEqual(['dir']);
    expect(OPS['train.save'].args.parse({ dir: '/abs/ckpt' })).toEqual({ dir: '/abs/ckpt', hf: false });
  });
});

describe('step metrics', () => {
  it('are a typed record: known keys are numbers, a wrong name does not compile', () => {
    expectTypeOf<StepMetrics['step']>().toEqualTypeOf<number>();
    expectTypeOf<StepMetrics['loss']>().toEqualTypeOf<number>();
    // Present in PairGRPO runs only (an SFT run logs ce/mse or */sft_loss instead).
    expectTypeOf<StepMetrics['und/reward']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<StepMetrics['ce']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<PairGrpoStepMetrics['und/reward']>().toEqualTypeOf<number>();
    expectTypeOf<PairGrpoStepMetrics>().toMatchTypeOf<StepMetrics>();

    const m: StepMetrics = {
      step: 1,
      epoch: 0,
      loss: 0.5,
      grad_norm: 1,
      lr: 1e-6,
      'time/update': 0.1,
      'time/step': 0.2,
      'und/reward': 0.75,
    };
    expect(m['und/reward']).toBe(0.75);
    // @ts-expect-error `und/rewards` is not a metric
    expect(m['und/rewards']).toBeUndefined();
    // @ts-expect-error `gen_reward` is not a metric (`gen/reward` is)
    expect(m.gen_reward).toBeUndefined();
    // @ts-expect-error a row of the wrong type
    const bad: StepMetrics = { ...m, loss: 'low' };
    expect(bad.loss).toBe('low');
  });
});
