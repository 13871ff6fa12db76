/**
 * Family options: what each built-in model family accepts in `model.options` (load) and in
 * `und.options` / `gen.options` (sampling), with their defaults. The sidecar's adapter validates
 * them with the generated schema, so an unknown name is refused by name. A family not listed here
 * (a user's plug-in adapter) validates its own options.
 */
import { z } from 'zod';
import { ConfigError } from '../errors.js';

export const JanusLoadOptions = z.strictObject({
  /** User turn of an understanding prompt: `{image}` once (the image placeholder run), `{question}`, optional `{system}`. */
  und_template: z.string().default('{system}<|User|>: {image}\n{question}\n\n<|Assistant|>:'),
  /** User turn of a generation prompt: `{prompt}`, optional `{system}`. */
  gen_template: z.string().default('{system}<|User|>: {prompt}\n\n<|Assistant|>:'),
  /** `{system}` of understanding prompts (followed by a blank line when set); unset = the model's own: Janus'
   * VLChatProcessor.system_prompt "You are a helpful language and vision assistant. …" (janus/models/processing_vlm.py:78-82;
   * transformers' DEFAULT_SYSTEM_PROMPT), or what its config.json pins (`pairuni_system_prompts`; the tiny models: ''). */
  und_system_prompt: z.string().optional(),
  /** `{system}` of generation prompts; unset = '' as upstream's t2i examples (generation_inference.py:49), or the config's pin. */
  gen_system_prompt: z.string().optional(),
  /** Stop gradients through the unconditional CFG branch (T2I-R1 keeps them). */
  detach_uncond: z.boolean().default(false),
  /** Rollout decoder: `static` (batched prefill, static KV cache, on-device sampling; pairuni_sidecar/rollout)
   * or `reference` (the original dynamic-cache loop, kept as the exactness reference). */
  rollout_engine: z.enum(['static', 'reference']).default('static'),
  /** Compile the static engine's decode step (torch.compile reduce-overhead: CUDA graphs); `auto` = on CUDA only. */
  rollout_compile: z.enum(['auto', 'on', 'off']).default('auto'),

  /**
   * LoRA rank on the Linear layers of the selected train_modules that `lora_targets` names; 0 = full weights.
   * With LoRA only the factors train (every base weight stays frozen); exports merge W + (alpha/r)·B·A.
   */
  lora_rank: z.number().int().min(0).default(0),
  lora_alpha: z.number().positive().default(16),
  /** Module-name suffixes of the Linear layers that get LoRA factors (e.g. `q_proj`, `mlp.down_proj`); [] = the LLM's attention and MLP projections (every Linear inside its decoder layers). */
  lora_targets: z.array(z.string().min(1)).default([]),
});
export const JanusUndOptions = z.strictObject({});
export const JanusGenOptions = z.strictObject({});

/** Lumina-DiMOO (masked diffusion): a user's upstream checkout + checkpoint, or the project's tiny model. */
export const DimooLoadOptions = z.strictObject({
  /** Lumina-DiMOO checkout (has model/modeling_xllmx_dimoo.py); '' = the PAIRUNI_DIMOO_CODE environment variable. Unused for the tiny model. */
  code_dir: z.string().default(''),
  /** `{system}`, `{question}`, `{image}` once (BOI, rows of codes + NEWLINE, EOI). */
  und_template: z.string().default('<system>{system}</system><user>{question}{image}</user>'),
  /** `{system}`, `{prompt}`; the unconditional (CFG) prompt puts the <uncondition> token in place of `{prompt}`. */
  gen_template: z.string().default('<system>{system}</system><user>{prompt}</user>'),
  /** `{system}` of understanding prompts; unset = the checkpoint's own: upstream's understanding prompt
   * (config.py:40, `text_understanding`) for Lumina-DiMOO, '' for the project's tiny models (trained without one). */
  und_system_prompt: z.string().optional(),
  /** `{system}` of generation prompts (and their CFG rows); unset = upstream's `image_generation` prompt
   * (config.py:41) for Lumina-DiMOO, '' for the tiny models. */
  gen_system_prompt: z.string().optional(),
  /** One-step estimator: probability of masking each prompt token (dLLM's LLaDA recipe 0.15; d1 uses 0.3). */
  p_mask_prompt: z.number().min(0).max(1).default(0.15),
  /** Log-probs for the update: `one_step` (d1 / dLLM mean-field estimate under the est_seed's masks) or `trajectory` (the recorded unmask steps rescored: text steps or image steps forwards, deterministic). */
  estimator: z.enum(['one_step', 'trajectory']).default('one_step'),
  /** Generated image side in pixels (a multiple of 16 for DiMOO); 0 = the model's own (512 for DiMOO, the tiny model's grid). */
  image_size: z.number().int().min(0).default(0),

  /**
   * LoRA rank on the Linear layers of the selected train_modules that `lora_targets` names; 0 = full weights.
   * With LoRA only the factors train (every base weight stays frozen); exports merge W + (alpha/r)·B·A.
   */
  lora_rank: z.number().int().min(0).default(0),
  lora_alpha: z.number().positive().default(16),
  /** Module-name suffixes of the Linear layers that get LoRA factors (e.g. `q_proj`, `mlp.down_proj`); [] = the LLM's attention and MLP projections (every Linear inside its transformer blocks). */
  lora_targets: z.array(z.string().min(1)).default([]),
});
export const DimooUndOptions = z.strictObject({
  /** Diffusion steps for the answer (paper, Appendix E: 2). */
  steps: z.number().int().min(1).default(2),
  /** Answer slots per block; 0 = one block (the answer slots are und.maxNewTokens). */
  block_length: z.number().int().min(0).default(0),
  /** Text guidance u + w (c - u) against the prompt-masked input, in rollouts and log-probs; 1 = none (d1's default). */
  cfg_weight: z.number().default(1),
});
export const DimooGenOptions = z.strictObject({
  /** MaskGIT steps (paper, Appendix E: 35; DiMOO's README 64). Guidance is gen.cfgWeight (w = s + 1: DiMOO's s = 4 is 5). */
  steps: z.number().int().min(1).default(35),
});

/** Bagel (BAGEL-7B-MoT) SFT on PairUG (PairUni App. E); defaults are Bagel's fine-tuning recipe. */
export const BagelLoadOptions = z.strictObject({
  /** Weight of the answer-token cross-entropy in the SFT loss. */
  ce_weight: z.number().min(0).default(1),
  /** Weight of the flow-matching velocity MSE in the SFT loss. */
  mse_weight: z.number().min(0).default(1),
  /** Bagel's training timestep shift s: t = s·σ(n) / (1 + (s−1)·σ(n)), n ~ N(0, 1); 1 = plain logit-normal. */
  timestep_shift: z.number().positive().default(1),
  /** Probability of dropping the generation prompt (Bagel's text_cond_dropout_prob), for CFG. */
  text_cond_dropout: z.number().min(0).max(1).default(0.1),
  /** EMA decay of the trainable weights written to ema.safetensors (Bagel: 0.9999); 0 = no EMA. */
  ema_decay: z.number().min(0).lt(1).default(0),
  /** Generation target side in px (multiple of 16: VAE 8× · latent patch 2); the paper trains at 512. */
  vae_image_size: z.number().int().positive().multipleOf(16).default(512),
  /** Understanding image side in px (multiple of the ViT patch, 14); Bagel's ViT transform keeps 378–980. */
  vit_image_size: z.number().int().positive().multipleOf(14).default(378),
  /**
   * LoRA rank on the LLM projections (q/k/v/o, gate/up/down) of the selected experts; 0 = full weights.
   * The base stays frozen (bf16 under bf16 autocast); `vit` and the flow bridges, when selected, train fully.
   */
  lora_rank: z.number().int().min(0).default(0),
  lora_alpha: z.number().positive().default(16),
  /**
   * What the trainer runs: `sft` (the paper's Bagel recipe; rollouts sample but score nothing) or `pairgrpo`
   * (the adapter also declares `logprobs_und` / `logprobs_gen`: text answers scored as the autoregressive
   * families, images through the SDE sampler's per-step Gaussian log-probs).
   */
  objective: z.enum(['sft', 'pairgrpo']).default('sft'),
});
export const BagelUndOptions = z.strictObject({});
/** Bagel's flow sampler; defaults are upstream's text-to-image inference (inferencer.py, app.py). */
export const BagelGenOptions = z.strictObject({
  /** Points of the 1 → 0 time grid (upstream: 50, i.e. 49 Euler steps). */
  num_timesteps: z.number().int().min(2).default(50),
  /** Inference timestep shift s: t ← s·t / (1 + (s−1)·t) on the linear grid (upstream: 3.0). */
  timestep_shift: z.number().positive().default(3),
  /** Text guidance (gen.cfgWeight) only at steps with lo < t ≤ hi (upstream: [0.4, 1.0]). */
  cfg_interval: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1)]).default([0.4, 1]),
  /** Guided velocity rescaled by clamp(‖v_cond‖ / ‖v_guided‖, min, 1); 1 = no renormalisation (upstream: 0). */
  cfg_renorm_min: z.number().min(0).max(1).default(0),
  /** Norm of the renormalisation: over a sample's whole latent (`global`, upstream's t2i) or per latent token (`channel`). */
  cfg_renorm_type: z.enum(['global', 'channel']).default('global'),
  /**
   * Rollouts: Flow-GRPO's SDE noise scale a (σ_t = a·√(t/(1−t))); each step is the ODE step plus this noise
   * and records its Gaussian log-prob. 0 = the deterministic ODE sampler (no log-probs). Evaluation always samples the ODE.
   */
  noise_level: z.number().min(0).default(0.7),
});

export const FAMILIES = {
  janus: { load: JanusLoadOptions, und: JanusUndOptions, gen: JanusGenOptions },
  dimoo: { load: DimooLoadOptions, und: DimooUndOptions, gen: DimooGenOptions },
  bagel: { load: BagelLoadOptions, und: BagelUndOptions, gen: BagelGenOptions },
} as const;
export type Family = keyof typeof FAMILIES;

/**
 * Training-config defaults that differ by family, filled in where a config leaves them out (before the
 * shared defaults of src/contract/config.ts apply). Lumina-DiMOO: the paper's rollout size 2 per side.
 */
export const FAMILY_CONFIG_DEFAULTS: Record<string, { und?: Record<string, unknown>; gen?: Record<string, unknown> }> = {
  dimoo: { und: { k: 2 }, gen: { k: 2 } },
  // upstream Bagel's text-to-image guidance scale (app.py, inferencer.py gen_image)
  bagel: { gen: { cfgWeight: 4 } },
};

/** A config input with its family's config defaults filled in (other inputs unchanged). */
export function withFamilyDefaults(input: unknown): unknown {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return input;
  const cfg = input as Record<string, unknown>;
  const model = cfg.model as Record<string, unknown> | undefined;
  const fam = typeof model?.adapter === 'string' ? FAMILY_CONFIG_DEFAULTS[model.adapter] : undefined;
  if (!fam) return input;
  const out: Record<string, unknown> = { ...cfg };
  for (const side of ['und', 'gen'] as const) {
    const given = cfg[side];
    if (fam[side] && (given === undefined || (typeof given === 'object' && given !== null && !Array.isArray(given)))) {
      out[side] = { ...fam[side], ...((given as Record<string, unknown> | undefined) ?? {}) };
    }
  }
  return out;
}

/** The records generated as Python dataclasses for the families (name → schema). */
export const FAMILY_RECORDS = { JanusLoadOptions, JanusUndOptions, JanusGenOptions, DimooLoadOptions, DimooUndOptions, DimooGenOptions, BagelLoadOptions, BagelUndOptions, BagelGenOptions } as const;

/** Where each kind of family option sits in a training config. */
export const FAMILY_OPTION_FIELDS = { load: 'model.options', und: 'und.options', gen: 'gen.options' } as const;

/**
 * What is wrong with a built-in family's options, one line per problem naming the config field
 * (`model.options.detach_uncond: ...`); empty when they are valid or the family is a plug-in's.
 */
export function familyOptionIssues(family: string, where: 'load' | 'und' | 'gen', options: Record<string, unknown>): string[] {
  const f = (FAMILIES as Record<string, (typeof FAMILIES)[Family]>)[family];
  if (!f) return [];
  const r = f[where].safeParse(options);
  if (r.success) return [];
  const field = FAMILY_OPTION_FIELDS[where];
  const known = Object.keys(f[where].shape);
  return r.error.issues.flatMap((i) => {
    if (i.code === 'unrecognized_keys') {
      return i.keys.map((k) => `${field}.${k}: not an option of the ${family} family (${known.length ? `it takes ${known.join(', ')}` : 'it takes none'})`);
    }
    return [`${[field, ...i.path.map(String)].join('.')}: ${i.message}`];
  });
}

/** Fills a built-in family's option defaults so the sidecar receives explicit values; other families pass through. */
export function familyOptions(family: string, where: 'load' | 'und' | 'gen', options: Record<string, unknown>): Record<string, unknown> {
  const f = (FAMILIES as Record<string, (typeof FAMILIES)[Family]>)[family];
  if (!f) return options;
  const issues = familyOptionIssues(family, where, options);
  if (issues.length) throw new ConfigError(issues.join('; '));
  return f[where].parse(options) as Record<string, unknown>;
}
