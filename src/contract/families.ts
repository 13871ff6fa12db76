/**
 * Family options: what each built-in model family accepts in `model.options` (load) and in
 * `und.options` / `gen.options` (sampling), with their defaults. The sidecar's adapter validates
 * them with the generated schema, so an unknown name is refused by name. A family not listed here
 * (a user's plug-in adapter) validates its own options.
 */
import { z } from 'zod';

export const JanusLoadOptions = z.strictObject({
  /** User turn of an understanding prompt: `{image}` once (the image placeholder run), `{question}`, optional `{system}`. */
  und_template: z.string().default('{system}<|User|>: {image}\n{question}\n\n<|Assistant|>:'),
  /** User turn of a generation prompt: `{prompt}`, optional `{system}`. */
  gen_template: z.string().default('{system}<|User|>: {prompt}\n\n<|Assistant|>:'),
  system_prompt: z.string().default(''),
  /** Stop gradients through the unconditional CFG branch (T2I-R1 keeps them). */
  detach_uncond: z.boolean().default(false),
});
export const JanusUndOptions = z.strictObject({});
export const JanusGenOptions = z.strictObject({});

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
});
export const BagelUndOptions = z.strictObject({});
export const BagelGenOptions = z.strictObject({});

export const FAMILIES = {
  janus: { load: JanusLoadOptions, und: JanusUndOptions, gen: JanusGenOptions },
  bagel: { load: BagelLoadOptions, und: BagelUndOptions, gen: BagelGenOptions },
} as const;
export type Family = keyof typeof FAMILIES;

/** The records generated as Python dataclasses for the families (name → schema). */
export const FAMILY_RECORDS = { JanusLoadOptions, JanusUndOptions, JanusGenOptions, BagelLoadOptions } as const;

/** Fills a built-in family's option defaults so the sidecar receives explicit values; other families pass through. */
export function familyOptions(family: string, where: 'load' | 'und' | 'gen', options: Record<string, unknown>): Record<string, unknown> {
  const f = (FAMILIES as Record<string, (typeof FAMILIES)[Family]>)[family];
  return f ? (f[where].parse(options) as Record<string, unknown>) : options;
}
