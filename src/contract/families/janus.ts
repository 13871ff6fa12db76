/** Janus-Pro (autoregressive text and VQ image tokens): its `model.options`, `und.options`, `gen.options`. */
import { z } from 'zod';
import type { FamilyDeclaration } from './index.js';

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

export const janus = {
  options: { load: JanusLoadOptions, und: JanusUndOptions, gen: JanusGenOptions },
  records: { JanusLoadOptions, JanusUndOptions, JanusGenOptions },
} as const satisfies FamilyDeclaration;
