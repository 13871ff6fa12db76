/**
 * The op catalogue: every built-in op's request (args, payloads) and reply, declared once.
 *
 * - The typed client (`src/sidecar/client.ts`) derives `sc.<ns>.<method>()` from it, validates each
 *   request before it leaves and each reply when it arrives.
 * - `protocols/tools/make-contract.ts` exports it as JSON Schema (`protocols/schemas/ops.schema.json`)
 *   and generates the sidecar's validators and config dataclasses from it; the sidecar refuses a
 *   request that does not match, naming the field (`bad_request`).
 * - `scope: 'world'` marks collective ops (every rank must run them, in the same order): with FSDP2 a
 *   load shards, a rollout gathers the weights once, an update reduces gradients, a save gathers state.
 *   `Sidecar` sends them to every rank in one order (src/sidecar/sidecar.ts); the others go to one rank.
 *
 * Wire keys are snake_case (TS code reads and writes them in camelCase: src/contract/casing.ts); config
 * records travel as `wireRecord(...)` of their one declaration.
 */
import { z } from 'zod';
import { GenConfig, LossConfig, ModelConfig, OptimConfig, RewardSpec, UndConfig } from './config.js';
import { BackboneSpec } from './backbone.js';
import { DTYPE_NAMES, type DType } from '../protocol/constants.js';
import { userPath, wireRecord } from './wire.js';
import { type CamelInput, type CamelOutput, metricRecord } from './casing.js';

export interface PayloadSpec {
  enc?: 'raw' | 'arrow';
  dtype?: readonly DType[];
  rank?: number;
  optional?: boolean;
}
/** `'any'`: the op takes whatever payloads it is given (transport probes, echo). */
export type PayloadSpecs = Readonly<Record<string, PayloadSpec>> | 'any';

export interface OpDecl<A extends z.ZodType = z.ZodType, R extends z.ZodType = z.ZodType> {
  doc: string;
  args: A;
  reply: R;
  payloads?: PayloadSpecs;
  replyPayloads?: PayloadSpecs;
  scope?: 'world' | 'rank';
}

const op = <A extends z.ZodType, R extends z.ZodType>(d: OpDecl<A, R>) => d;

const int = z.number().int();
const uint = int.min(0);
const str = z.string().min(1);
const empty = z.strictObject({});
const free = z.record(z.string(), z.unknown());
const handle = str;
/** One rollout, or several of one side that share its normalisation group (in order). */
const handles = z.union([handle, z.array(handle).min(1)]);
const elapsed = { elapsed_s: z.number() };

/** Capability names an adapter may declare; the trainer decides from them what runs. */
export const CAPABILITIES = [
  'und_rollout',
  'gen_rollout',
  'logprobs_und',
  'logprobs_gen',
  'sft',
  'cfg',
  'ref_model',
] as const;
/** One of {@link CAPABILITIES}. */
export type Capability = (typeof CAPABILITIES)[number];

/** Plug-in kinds of the sidecar's one registry. */
export const PLUGIN_KINDS = ['op', 'reward', 'adapter', 'backbone', 'tiny', 'codec'] as const;

// -- records the sidecar receives as generated dataclasses ---------------------------------------
export const LoadModel = wireRecord(ModelConfig.omit({ refPath: true }));
export const LoadOptim = wireRecord(OptimConfig);
// The config records less the fields only the controller uses (group sizes, prompt text, reward, μ).
/**
 * `est_seeds`: the estimator seed of each inner iteration that will update on this rollout (what
 * `train.update` sends as `est_seed`), so adapters whose log-probs are a seeded estimate (masked
 * diffusion) record the behaviour log-probs under each of those masks before any update.
 */
const estSeeds = { seed: uint, est_seeds: z.array(uint).default([0]) };
export const UndSampling = wireRecord(
  UndConfig.omit({ k: true, instruction: true, formatWeight: true, reward: true }),
).extend(estSeeds);
export const GenSampling = wireRecord(GenConfig.omit({ k: true, reward: true })).extend(estSeeds);
export const UpdateLoss = wireRecord(LossConfig.omit({ mu: true })).extend({
  /** eq. 2/4 normalise each side (`side`); eq. 1 one expectation over the mixed batch (`batch`). */
  norm: z.enum(['side', 'batch']).default('side'),
});
export const Reward = RewardSpec;
/** `plan`'s request: a family and a preset *or* a model directory, the world and the training options. */
export const PlanArgs = z.strictObject({
  family: z.enum(['janus', 'dimoo', 'bagel']),
  preset: str.optional(),
  model_dir: userPath.optional(),
  ranks: int.min(1).default(1),
  gpu_gib: z.number().positive().default(80),
  train_modules: z.array(str).min(1).default(['language_model']),
  lora_rank: uint.default(0),
  /** > 0: a reference model is planned (unless LoRA, whose frozen base is the reference). */
  beta: z.number().min(0).default(0),
  micro_batch: int.min(1).default(1),
  k: int.min(1).default(4),
  text_tokens: int.min(1).default(256),
  image_tokens: int.min(1).optional(),
  checkpointing: z.boolean().default(true),
  cpu_offload: z.boolean().default(false),
  /** bf16-mixed: the GPU discipline (fp32 master, bf16 frozen/compute); fp32: the CPU one. */
  precision: z.enum(['bf16-mixed', 'fp32']).default('bf16-mixed'),
  /** rl (rollouts of K) or sft; default: sft for bagel, rl otherwise. */
  mode: z.enum(['rl', 'sft']).optional(),
});
/** The records generated as Python dataclasses (name → schema). */
export const RECORDS = {
  LoadModel,
  LoadOptim,
  UndSampling,
  GenSampling,
  UpdateLoss,
  Reward,
  BackboneSpec,
  PlanRequest: PlanArgs,
} as const;

// -- metric records --------------------------------------------------------------------------------
const SIDE_METRICS = [
  'loss',
  'tokens',
  'clip_frac',
  'ratio_mean',
  'ratio_min',
  'ratio_max',
  'kl_old',
  'kl_ref',
  'skipped',
] as const;
const sideMetrics = <S extends 'und' | 'gen'>(side: S) =>
  Object.fromEntries(SIDE_METRICS.map((k) => [`${side}/${k}`, z.number().optional()])) as {
    [K in (typeof SIDE_METRICS)[number] as `${S}/${K}`]: z.ZodOptional<z.ZodNumber>;
  };
/** What one PairGRPO optimizer step reports (`train.update`); a renamed key fails on arrival. */
export const UpdateMetrics = metricRecord(
  z.strictObject({
    ...sideMetrics('und'),
    ...sideMetrics('gen'),
    loss: z.number(),
    grad_norm: z.number(),
    grad_cos: z.number().optional(),
    lr: z.number(),
    update_tokens: z.number(),
    update_s: z.number(),
    optimizer_step: uint,
    ...elapsed,
  }),
);
export type UpdateMetrics = z.infer<typeof UpdateMetrics>;

/** What one supervised step reports (`train.sft`). */
export const SftMetrics = metricRecord(
  z.strictObject({
    'und/sft_loss': z.number().optional(),
    'gen/sft_loss': z.number().optional(),
    /** Bagel: answer-token cross-entropy and flow-matching MSE (unweighted). */
    'ce/sft_loss': z.number().optional(),
    'mse/sft_loss': z.number().optional(),
    /** What was back-propagated (the family's weighted sum of the terms). */
    loss: z.number(),
    grad_norm: z.number(),
    lr: z.number(),
    optimizer_step: uint,
    ...elapsed,
  }),
);
export type SftMetrics = z.infer<typeof SftMetrics>;

const rolloutReply = z.strictObject({
  handle,
  side: z.enum(['und', 'gen']),
  size: uint,
  tokens: uint,
  lengths: z.array(uint),
  texts: z.array(z.string()).optional(),
  ...elapsed,
});

/** Held-out ShapesWorld results of one model (`shapesworld.eval`). */
export const EvalResult = metricRecord(
  z.looseObject({
    und_accuracy: z.number(),
    und_format_rate: z.number(),
    und_accuracy_by_category: z.record(z.string(), z.number()),
    gen_reward: z.number(),
    gen_binary: z.number(),
    gen_reward_by_category: z.record(z.string(), z.number()),
    gen_binary_by_category: z.record(z.string(), z.number()),
    n_und: uint,
    n_gen_prompts: uint,
    samples_per_prompt: uint,
  }),
);
export type EvalResult = z.infer<typeof EvalResult>;

const planBytes = z.strictObject({
  parameters: uint,
  gradients: uint,
  optimizer: uint,
  reference: uint,
  activations: uint,
  fsdp_buffers: uint,
  gathered_weights: uint,
  rollout: uint,
  update_peak: uint,
  rollout_peak: uint,
  total: uint,
  /** bytes held in host memory per rank (CPU offload). */
  host: uint,
});
export const PlanReply = z.strictObject({
  family: z.string(),
  preset: z.string().nullable(),
  model_dir: z.string().nullable(),
  mode: z.enum(['rl', 'sft']),
  request: z.looseObject({}),
  image_tokens: uint,
  /** per-rank bytes (rank 0 holds the largest FSDP shard). */
  bytes: planBytes,
  /** GPU bytes a plan may use: gpu_gib less the 10% kept free. */
  usable: uint,
  fits: z.boolean(),
  counts: z.strictObject({ params: uint, trainable: uint }),
  suggestion: z.strictObject({ change: z.string(), total: uint, request: z.looseObject({}) }).nullable(),
  verdict: z.string(),
});
export type PlanReply = CamelOutput<typeof PlanReply>;

const f32 = ['f32'] as const;
const idx = ['i32', 'i64'] as const;

/** The op catalogue: each built-in op's scope, doc, argument and reply schemas and payloads (rendered as docs/ops.md). */
export const OPS = {
  // -- the sidecar itself -----------------------------------------------------------------------
  info: op({
    doc: 'versions, devices, registered plug-ins (ops, rewards, adapters, backbones), the ones that failed to import, the loaded policy',
    args: empty,
    reply: z.looseObject({
      sidecar: z.string(),
      python: z.string(),
      torch: z.string(),
      cuda: z.boolean(),
      cuda_version: z.string().nullable(),
      devices: z.array(z.looseObject({ index: uint, name: z.string(), memory: uint })),
      threads: uint,
      packages: z.record(z.string(), z.string().nullable()),
      ops: z.array(z.string()),
      plugins: z.record(z.string(), z.array(z.string())),
      unavailable: z.record(z.string(), z.string()),
      handles: uint,
      policy: z
        .looseObject({ adapter: z.string(), family: z.string(), capabilities: z.array(z.enum(CAPABILITIES)) })
        .nullable(),
    }),
  }),
  echo: op({
    doc: 'returns its args and payloads unchanged',
    args: free,
    reply: free,
    payloads: 'any',
    replyPayloads: 'any',
  }),
  'handles.free': op({
    doc: 'frees sidecar-resident objects (rollouts, matrices) by handle',
    args: z.strictObject({ handles: z.array(z.string()) }),
    reply: z.strictObject({ freed: uint }),
  }),
  'models.tiny': op({
    doc: "build a tiny random-init model directory of a family (tests, examples, benches) with that family's registered builder",
    args: z.strictObject({ family: str.default('janus'), dir: userPath, seed: uint.default(0) }),
    reply: z.strictObject({ dir: z.string() }),
  }),

  // -- transport probes and fault injection -------------------------------------------------------
  'tensor.echo': op({
    doc: 'returns every payload; Arrow tables are re-encoded by pyarrow',
    args: z.strictObject({ fixed_shape_tensor_check: z.boolean().optional() }),
    reply: z.strictObject({ seen: z.record(z.string(), free) }),
    payloads: 'any',
    replyPayloads: 'any',
  }),
  'tensor.sum': op({
    doc: 'sum of every raw payload (the one-way transfer probe)',
    args: empty,
    reply: z.strictObject({ sums: z.record(z.string(), z.number()) }),
    payloads: 'any',
  }),
  'tensor.recv': op({
    doc: 'accepts payloads and returns only their sizes',
    args: empty,
    reply: z.strictObject({ nbytes: z.record(z.string(), uint) }),
    payloads: 'any',
  }),
  'tensor.make': op({
    doc: 'a new tensor of the given dtype/shape filled with arange or zeros (the reply-direction probe)',
    args: z.strictObject({
      shape: z.array(uint).max(32),
      dtype: z
        .enum(['float16', 'bfloat16', 'float32', 'float64', 'int8', 'int16', 'int32', 'int64', 'uint8', 'bool'])
        .default('float32'),
      fill: z.enum(['arange', 'zeros']).default('arange'),
    }),
    reply: empty,
    replyPayloads: { out: {} },
  }),
  'debug.sleep': op({
    doc: 'sleeps `seconds` in `step`-second slices, checking for cancel/deadline between slices',
    args: z.strictObject({ seconds: z.number().min(0), step: z.number().positive().default(0.02) }),
    reply: z.strictObject({ slept: z.number(), slices: uint }),
  }),
  'debug.fail': op({
    doc: 'raises the requested exception (tests the error path)',
    args: z.strictObject({ kind: z.enum(['value', 'file']).default('value'), msg: z.string().optional() }),
    reply: empty,
  }),
  'debug.exit': op({
    doc: 'terminates the sidecar process at once (tests rank loss)',
    args: z.strictObject({ code: int.default(1) }),
    reply: empty,
  }),

  // -- pairing kernels (resident matrices live in the one handle store) -----------------------------
  'kernels.put': op({
    doc: 'make a float32 matrix resident; returns its handle',
    args: z.strictObject({ device: z.string().default('auto') }),
    reply: z.strictObject({ handle, device: z.string() }),
    payloads: { m: { dtype: f32, rank: 2 } },
  }),
  'kernels.set_rows': op({
    doc: 'overwrite rows of a resident matrix',
    args: z.strictObject({ handle }),
    reply: empty,
    payloads: { rows: { dtype: idx, rank: 1 }, values: { dtype: f32, rank: 2 } },
  }),
  'kernels.gemm_nt': op({
    doc: 'C = A[a_rows] · B[b_rows]ᵀ for resident A, B',
    args: z.strictObject({ a: handle, b: handle }),
    reply: empty,
    payloads: { a_rows: { dtype: idx, rank: 1, optional: true }, b_rows: { dtype: idx, rank: 1, optional: true } },
    replyPayloads: { c: { dtype: f32, rank: 2 } },
  }),
  'kernels.topk': op({
    doc: "streaming top-k by inner product (mode 'ip') or nearest centroid (mode 'assign')",
    args: z.strictObject({
      q: handle,
      d: handle,
      k: int.min(1),
      mode: z.enum(['ip', 'assign']).default('ip'),
      floor: z.number().optional(),
      negate: z.boolean().default(false),
    }),
    reply: empty,
    payloads: { q_rows: { dtype: idx, rank: 1, optional: true }, d_rows: { dtype: idx, rank: 1, optional: true } },
    replyPayloads: { idx: { dtype: ['i64'], rank: 2 }, score: { dtype: f32, rank: 2 } },
  }),
  'kernels.stats': op({
    doc: 'peak RSS and resident matrices of this sidecar',
    args: empty,
    reply: z.strictObject({ peak_rss: uint, resident: z.record(z.string(), z.array(uint)), threads: uint }),
  }),

  // -- features and manifests --------------------------------------------------------------------
  'features.backbone': op({
    doc: 'load a backbone (validating its weights); returns key, dim, device',
    args: z.strictObject({ backbone: BackboneSpec }),
    reply: z.strictObject({ key: z.string(), dim: int, device: z.string(), kind: z.string() }),
  }),
  'features.embed': op({
    doc: 'embed encoded images (blob + offsets) → L2-normalised float32 features',
    args: z.strictObject({ backbone: BackboneSpec, batch_size: int.min(1).default(32) }),
    reply: z.strictObject({ key: z.string(), dim: int, n: uint }),
    payloads: { blob: { dtype: ['u8'], rank: 1 }, offsets: { dtype: ['i64'], rank: 1 } },
    replyPayloads: { features: { dtype: f32, rank: 2 } },
  }),
  'manifest.parquet_to_arrow': op({
    doc: 'convert a Parquet manifest to an Arrow IPC file for the TS readers',
    args: z.strictObject({ path: userPath, out: userPath }),
    reply: z.strictObject({ rows: uint, columns: z.array(z.string()), out: z.string() }),
  }),

  // -- ShapesWorld (the demo's world; evaluation runs through any family's adapter) ----------------
  'shapesworld.build': op({
    doc: 'write ShapesWorld U/G train/eval JSONL manifests and PNGs',
    args: z.strictObject({ out: userPath, seed: uint.default(0), sizes: z.record(z.string(), uint).default({}) }),
    reply: z.looseObject({ sizes: z.record(z.string(), uint) }),
  }),
  'shapesworld.overlap': op({
    doc: "train/eval overlap of a built ShapesWorld dataset and a model card's pretraining pool: eval understanding items equal to a training item, eval prompts equal to a training prompt",
    args: z.strictObject({ data: userPath, model_dir: userPath.optional() }),
    reply: z.strictObject({
      u_eval: uint,
      u_duplicates: uint,
      g_eval: uint,
      g_verbatim: uint,
      train_u_items: uint,
      train_prompts: uint,
      g_eval_distinct_prompts: uint,
      pretrain: z.strictObject({ seed: uint, n_items: uint }).nullable(),
      /** Why the model's pretraining pool was not checked (null when it was, or when no model was given). */
      caveat: z.string().nullable(),
    }),
  }),
  'shapesworld.pretrain': op({
    doc: 'pretrain the tiny ShapesWorld Janus from scratch (resumable)',
    args: z.strictObject({
      out: userPath,
      seed: uint.default(0),
      work: userPath.optional(),
      format: free.default({}),
      config: free.default({}),
    }),
    reply: z.looseObject({}),
  }),
  'shapesworld.eval': op({
    doc: "held-out MCQ accuracy and generation reward per category of a model directory, through its card's family adapter",
    args: z.strictObject({
      model_dir: userPath,
      device: z.string().default('cpu'),
      data: userPath.optional(),
      seed: uint.default(0),
      n: int.min(1).default(300),
      n_und: int.min(1).optional(),
      samples: int.min(1).default(2),
      cfg_weight: z.number().default(3),
      temperature: z.number().positive().default(1),
      sample_seed: uint.default(0),
      grid: userPath.optional(),
      grid_n: int.min(1).default(16),
    }),
    reply: EvalResult,
  }),
  'shapesworld.eval_options': op({
    doc: 'held-out MCQ accuracy by the log-likelihood of each option letter (no sampler), through a family adapter with option scoring (bagel)',
    args: z.strictObject({
      model: LoadModel,
      data: userPath,
      n_und: int.min(1).default(300),
      /** How the question is shown: `{question}` and `{choices}` ("A. …" lines), as the trainer renders it. */
      instruction: z.string().min(1),
      /** Held-out generation prompts whose sampled images are scored (shapes reward); 0 = generation not measured. */
      n_gen: uint.default(0),
      samples: int.min(1).default(2),
      cfg_weight: z.number().default(4),
      sample_seed: uint.default(0),
      /** The family's sampling options (`gen.options`), e.g. Bagel's `num_timesteps`. */
      gen_options: free.default({}),
      /** A PNG grid of the first sample of the first 16 prompts. */
      grid: userPath.optional(),
    }),
    reply: metricRecord(
      z.strictObject({
        und_accuracy: z.number(),
        und_accuracy_by_category: z.record(z.string(), z.number()),
        n_und: uint,
        gen_reward: z.number().optional(),
        gen_binary: z.number().optional(),
        gen_reward_by_category: z.record(z.string(), z.number()).optional(),
        gen_binary_by_category: z.record(z.string(), z.number()).optional(),
        n_gen_prompts: uint.optional(),
        samples_per_prompt: uint.optional(),
        ...elapsed,
      }),
    ),
  }),
  'shapesworld.score': op({
    doc: 'score images against ShapesWorld prompts (graded and binary)',
    args: z.strictObject({ prompts: z.array(z.string()), mode: z.enum(['graded', 'binary']).default('graded') }),
    reply: z.strictObject({ n: uint, graded_mean: z.number(), binary_mean: z.number() }),
    payloads: { images: { dtype: ['u8'], rank: 4 } },
    replyPayloads: { graded: { dtype: f32, rank: 1 }, binary: { dtype: f32, rank: 1 } },
  }),

  // -- planning ---------------------------------------------------------------------------------
  plan: op({
    doc: 'per-rank memory of a training configuration (architecture built on the meta device, no weights): parameters, gradients, optimizer, reference, activations, rollout buffers, whether it fits, and the cheapest listed change that makes it fit',
    args: PlanArgs,
    reply: PlanReply,
  }),

  // -- training: the policy, its rollouts (resident, by handle), its updates ------------------------
  'train.load': op({
    doc: 'load (or resume) the policy to train, replacing a loaded one; replies with what the adapter can do',
    scope: 'world',
    args: z.strictObject({
      model: LoadModel,
      optim: LoadOptim,
      seed: uint,
      ref_model_dir: userPath.optional(),
      resume_dir: userPath.optional(),
    }),
    reply: z.looseObject({
      adapter: z.string(),
      family: z.string(),
      capabilities: z.array(z.enum(CAPABILITIES)),
      optimizer_step: uint,
      ...elapsed,
    }),
  }),
  'train.und_rollout': op({
    doc: 'sample n answers per (image, question); the batch stays in the sidecar under a handle',
    scope: 'world',
    args: z.strictObject({
      n: int.min(1),
      items: z.array(z.strictObject({ image_path: userPath, text: z.string() })).min(1),
      sampling: UndSampling,
    }),
    reply: rolloutReply,
  }),
  'train.gen_rollout': op({
    doc: 'sample n images per prompt; the batch stays in the sidecar under a handle',
    scope: 'world',
    args: z.strictObject({
      n: int.min(1),
      items: z.array(z.strictObject({ prompt: str })).min(1),
      sampling: GenSampling,
    }),
    reply: rolloutReply,
  }),
  'train.prepare_reward': op({
    doc: 'build (and cache) a reward scorer so a missing package or checkpoint fails before training',
    args: z.strictObject({ reward: Reward }),
    reply: z.strictObject({ reward: z.string(), ...elapsed }),
  }),
  'train.reward': op({
    doc: 'score a generation rollout with a registered reward',
    args: z.strictObject({ handle, reward: Reward }),
    reply: z.strictObject({ size: uint, ...elapsed }),
    replyPayloads: { rewards: { dtype: f32, rank: 1 } },
  }),
  'train.rollout_images': op({
    doc: "a generation rollout's images as one uint8 (B, H, W, 3) payload (prompt-major, n per prompt in the order sampled) and each image's prompt, for rewards scored outside the sidecar and the exporters",
    args: z.strictObject({ handle }),
    reply: z.strictObject({ size: uint, prompts: z.array(z.string()), ...elapsed }),
    replyPayloads: { images: { dtype: ['u8'], rank: 4 } },
  }),
  'train.update': op({
    doc: 'one optimizer step of the clipped surrogate over the given rollouts and advantages',
    scope: 'world',
    args: z.strictObject({
      handles: z.strictObject({ und: handles.optional(), gen: handles.optional() }),
      loss: UpdateLoss,
      est_seed: uint,
      grad_cosine: z.boolean().default(false),
      /** Drop the rollouts after this step (the last inner iteration) without another round trip. */
      free: z.boolean().default(false),
    }),
    reply: UpdateMetrics,
    payloads: { adv_und: { dtype: f32, rank: 1, optional: true }, adv_gen: { dtype: f32, rank: 1, optional: true } },
  }),
  'train.sft': op({
    doc: 'one supervised optimizer step: CE on answers (und) and on image tokens or latents (gen)',
    scope: 'world',
    args: z.strictObject({
      examples: z
        .array(
          z.strictObject({
            side: z.enum(['und', 'gen']),
            image_path: userPath,
            text: z.string(),
            target: z.string().default(''),
          }),
        )
        .min(1),
      /** Seeds the step's randomness (dropout, timesteps, noise) so a resumed run repeats it; absent: the process RNG. */
      seed: uint.optional(),
    }),
    reply: SftMetrics,
  }),
  'train.logprobs': op({
    doc: 'current-policy per-token log-probs of a rollout next to its old log-probs and mask',
    scope: 'world',
    args: z.strictObject({ handle, est_seed: uint.default(0) }),
    reply: z.strictObject({ size: uint, ...elapsed }),
    replyPayloads: {
      logp: { dtype: f32, rank: 2 },
      old_logp: { dtype: f32, rank: 2 },
      mask: { dtype: ['u8'], rank: 2 },
    },
  }),
  'train.save': op({
    doc: 'write a resumable checkpoint atomically to dir: torch.distributed.checkpoint shards (model, optimizer, per-rank RNG), resumable at any number of ranks',
    scope: 'world',
    args: z.strictObject({
      dir: userPath,
      /** Also write the full model to `<dir>/model` in the family's own (HF) format, as `train.export` does. */
      hf: z.boolean().default(false),
    }),
    reply: z.strictObject({ dir: z.string(), optimizer_step: uint, ...elapsed }),
  }),
  'train.export': op({
    doc: "write the full model atomically to dir in the family's own (HF) format: from_pretrained and model.path read it (no optimizer, no RNG)",
    scope: 'world',
    args: z.strictObject({ dir: userPath }),
    reply: z.strictObject({ dir: z.string(), optimizer_step: uint, ...elapsed }),
  }),
  'train.grid': op({
    doc: "save a PNG grid of a generation rollout's images",
    args: z.strictObject({ handle, path: userPath, nrow: int.min(1).default(4), max_images: int.min(1).default(16) }),
    reply: z.strictObject({ path: z.string(), width: uint, height: uint, ...elapsed }),
  }),
} as const satisfies Record<string, OpDecl>;

/** The name of a catalogued op (`'train.load'`, ...). */
export type OpName = keyof typeof OPS;
/** What TS code passes to `sc.ns.method(args)`: the declared args with camelCase keys (src/contract/casing.ts). */
export type OpArgs<N extends OpName> = CamelInput<(typeof OPS)[N]['args']>;
/** What `sc.ns.method()` resolves to (`.args`): the declared reply with camelCase keys (metric names as declared). */
export type OpReply<N extends OpName> = CamelOutput<(typeof OPS)[N]['reply']>;
/** An op's args as they travel (snake_case keys): what a raw `sc.call` and the sidecar see. */
export type WireArgs<N extends OpName> = z.input<(typeof OPS)[N]['args']>;
/** An op's reply as it travels (snake_case keys). */
export type WireReply<N extends OpName> = z.output<(typeof OPS)[N]['reply']>;
export const OP_NAMES = Object.keys(OPS) as OpName[];
export { DTYPE_NAMES };
