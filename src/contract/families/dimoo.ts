import { z } from 'zod';
import type { FamilyDeclaration } from './index.js';

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

export const dimoo = {
  options: { load: DimooLoadOptions, und: DimooUndOptions, gen: DimooGenOptions },
  records: { DimooLoadOptions, DimooUndOptions, DimooGenOptions },
  /** The paper's rollout size for Lumina-DiMOO: 2 per side. */
  configDefaults: { und: { k: 2 }, gen: { k: 2 } },
} as const satisfies FamilyDeclaration;
