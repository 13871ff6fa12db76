import { z } from 'zod';
import type { FamilyDeclaration } from './index.js';

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

export const bagel = {
  options: { load: BagelLoadOptions, und: BagelUndOptions, gen: BagelGenOptions },
  records: { BagelLoadOptions },
} as const satisfies FamilyDeclaration;
