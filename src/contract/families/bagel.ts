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

export const bagel = {
  options: { load: BagelLoadOptions, und: BagelUndOptions, gen: BagelGenOptions },
  records: { BagelLoadOptions, BagelUndOptions, BagelGenOptions },
  // upstream Bagel's text-to-image guidance scale (app.py, inferencer.py gen_image)
  configDefaults: { gen: { cfgWeight: 4 } },
} as const satisfies FamilyDeclaration;
