/**
 * The training config's records that cross the wire (model, sampling, loss, optimizer): one zod
 * declaration per field, with its default. `src/train/config.ts` composes them into TrainConfig;
 * `src/contract/ops.ts` sends them as they are (`wireRecord`), and the sidecar gets generated
 * dataclasses of them (protocols/tools/make-contract.ts), so a field is written here and where it is used.
 */
import { z } from 'zod';
import { DEFAULT_UND_INSTRUCTION } from '../grpo/rewards.js';
import { RewardConfig, RewardSpec } from './reward-config.js';

export { RewardConfig, RewardSpec };

export const ModelConfig = z
  .object({
    /** Adapter family in the sidecar (`janus`; later `dimoo`, `bagel`). */
    adapter: z.string().min(1).default('janus'),
    /** A `from_pretrained` directory (see python_sidecar/pairuni_sidecar/adapters/README.md). */
    path: z.string().min(1),
    device: z.string().default('auto'),
    /** `auto`: bf16 autocast on CUDA over fp32 master weights, fp32 on CPU. */
    autocast: z.enum(['auto', 'bf16', 'off']).default('auto'),
    /** Parameter groups that train (Janus: language_model | vision | gen_head | gen_embed | vqmodel). */
    trainModules: z.array(z.string().min(1)).min(1).default(['language_model']),
    /** Activation checkpointing per transformer block in update passes (every family): recomputes a block's activations in the backward pass instead of keeping them. */
    gradientCheckpointing: z.boolean().default(true),
    /** With several ranks on GPUs: FSDP2 keeps the sharded parameters, gradients and optimizer state in host memory (`CPUOffloadPolicy`), copying each unit to the GPU for its forward and backward. */
    cpuOffload: z.boolean().default(false),
    /** Adapter-specific options (Janus: und_template, gen_template, und_system_prompt, gen_system_prompt, detach_uncond). */
    options: z.record(z.string(), z.unknown()).default({}),
    /** Frozen reference model for the KL term (β > 0); defaults to `path`. */
    refPath: z.string().min(1).optional(),
  })
  .strict();

export const UndConfig = z
  .object({
    /** K_u: answers sampled per understanding item (paper: 4 for 7B, 8 for 1B). */
    k: z.number().int().min(1).default(4),
    temperature: z.number().positive().default(1.0),
    maxNewTokens: z.number().int().min(1).default(512),
    /** User text around the question; `{question}` and `{choices}` are filled in. */
    instruction: z.string().min(1).default(DEFAULT_UND_INSTRUCTION),
    /** r_Und = Acc + formatWeight · Format (paper: accuracy only). */
    formatWeight: z.number().min(0).default(0),
    /**
     * Old log-probs from the sampling pass (`rollout`), a teacher-forced no-grad pass (`recompute`), or
     * `auto`: recompute under bf16 autocast (the two paths round differently there), rollout in fp32.
     */
    oldLogp: z.enum(['auto', 'rollout', 'recompute']).default('auto'),
    /** Family sampling options (one file per family in src/contract/families/); the adapter refuses unknown names. */
    options: z.record(z.string(), z.unknown()).default({}),
    /**
     * Where r_Und comes from (docs/training.md#reward-sources): unset, the built-in accuracy
     * (`{ builtin: 'accuracy' }`); or a callback, a reward server, or a weighted `sum` of these.
     */
    reward: RewardConfig.optional(),
  })
  .strict();

export const GenConfig = z
  .object({
    /** K_g: images sampled per generation prompt. */
    k: z.number().int().min(1).default(4),
    temperature: z.number().positive().default(1.0),
    cfgWeight: z.number().default(5),
    /** Training log-prob of image tokens: the CFG-guided distribution (default) or the conditional branch (T2I-R1 parity). */
    logp: z.enum(['cfg', 'cond']).default('cfg'),
    oldLogp: z.enum(['auto', 'rollout', 'recompute']).default('auto'),
    /** Family sampling options (one file per family in src/contract/families/); the adapter refuses unknown names. */
    options: z.record(z.string(), z.unknown()).default({}),
    /**
     * Where r_Gen comes from (docs/training.md#reward-sources): a reward registered in the sidecar
     * (`{ name, config }`: `hps` needs config.checkpoint; `shapes`, `brightness`, ...), a callback, a
     * reward server, or a weighted `sum` of these.
     */
    reward: RewardConfig.prefault({}),
  })
  .strict();

export const LossConfig = z
  .object({
    epsLow: z.number().min(0).lt(1).default(0.2),
    epsHigh: z.number().min(0).default(0.2),
    /** KL weight; 0 (the paper's setting) needs no reference model. */
    beta: z.number().min(0).default(0),
    /**
     * How token terms are aggregated (python policy/loss.py): `seq_mean` (GRPO: token mean per trajectory,
     * mean over trajectories), `token_mean` (T2I-R1: one token mean per side), `token_sum` (eq. 1–4 as
     * printed: Σ_t per trajectory, mean over trajectories for eq. 1, over pairs for eq. 2/4).
     */
    agg: z.enum(['seq_mean', 'token_mean', 'token_sum']).default('seq_mean'),
    /** μ: optimizer steps per rollout batch. */
    mu: z.number().int().min(1).default(1),
  })
  .strict();

export const OptimConfig = z
  .object({
    lr: z.number().positive().default(1e-6),
    betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]),
    eps: z.number().positive().default(1e-8),
    weightDecay: z.number().min(0).default(0),
    /** ≤ 0 disables clipping. */
    maxGradNorm: z.number().default(1.0),
    /** Trajectories per forward/backward (gradient accumulation inside a step). */
    microBatch: z.number().int().min(1).default(8),
  })
  .strict();
