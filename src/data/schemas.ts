/**
 * Record schemas shared by every stage: the user-facing manifests (U and G) and the PairUG dataset.
 * These zod schemas are the single source of truth; JSONL/Arrow/Parquet readers validate against them.
 */
import { z } from 'zod';

/** An image reference: a path (relative paths resolve against the manifest's directory) or inline bytes. */
export const ImageRef = z.union([
  z.object({ path: z.string().min(1) }).strict(),
  z.object({ bytes: z.instanceof(Uint8Array) }).strict(),
]);
export type ImageRef = z.infer<typeof ImageRef>;

/** Understanding sample U = (image, question, choices, answer). `answer` is a choice letter (A, B, ...). */
export const UnderstandingRecord = z.object({
  id: z.string().min(1),
  image: z.string().min(1).describe('image path, relative to the manifest file'),
  question: z.string().min(1),
  choices: z.array(z.string()).min(2).max(26),
  answer: z.string().regex(/^[A-Z]$/),
  /** Filled by semantic completion (or known ground truth): a generation prompt for the same image. */
  caption: z.string().optional(),
  category: z.string().optional(),
});
export type UnderstandingRecord = z.infer<typeof UnderstandingRecord>;

/** Generation sample G = (image, prompt). */
export const GenerationRecord = z.object({
  id: z.string().min(1),
  image: z.string().min(1).describe('reference image path, relative to the manifest file'),
  prompt: z.string().min(1),
  /** Filled by semantic completion: a multiple-choice question about what the prompt describes. */
  question: z.string().optional(),
  choices: z.array(z.string()).min(2).max(26).optional(),
  answer: z
    .string()
    .regex(/^[A-Z]$/)
    .optional(),
  category: z.string().optional(),
});
export type GenerationRecord = z.infer<typeof GenerationRecord>;

/** How a pair was formed: `aligned` (a cluster's medoid, one item on both sides, w_p = 1) or `retrieved` (a G item matched to its most similar remaining U item, cosine ≥ δ, w_p = √s_p). */
export const PairType = z.enum(['aligned', 'retrieved']);
/** A {@link PairType} value. */
export type PairType = z.infer<typeof PairType>;

/**
 * One PairUG pair. The understanding side is (u_image, question, choices, answer); the generation
 * side is (prompt, g_image as the reference image). For aligned pairs u_id === g_id's source sample
 * (same image, completed to a quadruple), s_p = 1 and w_p = 1; for retrieved pairs s_p is the cosine
 * similarity of the two images and w_p = sqrt(s_p).
 */
export const PairRecord = z.object({
  pair_id: z.string().min(1),
  type: PairType,
  s_p: z.number().min(-1).max(1),
  w_p: z.number().min(0).max(1),
  /** Source set and id of each side: an aligned pair built from a U sample has u_src = g_src = 'U'. */
  u_src: z.enum(['U', 'G']),
  u_id: z.string().min(1),
  g_src: z.enum(['U', 'G']),
  g_id: z.string().min(1),
  u_image: z.string().min(1),
  question: z.string().min(1),
  choices: z.array(z.string()).min(2).max(26),
  answer: z.string().regex(/^[A-Z]$/),
  g_image: z.string().min(1),
  prompt: z.string().min(1),
  category: z.string().optional(),
});
export type PairRecord = z.infer<typeof PairRecord>;
