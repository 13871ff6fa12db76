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
  /** Rollout decoder: `static` (batched prefill, static KV cache, on-device sampling; pairuni_sidecar/rollout)
   * or `reference` (the original dynamic-cache loop, kept as the exactness reference). */
  rollout_engine: z.enum(['static', 'reference']).default('static'),
  /** Compile the static engine's decode step (torch.compile reduce-overhead: CUDA graphs); `auto` = on CUDA only. */
  rollout_compile: z.enum(['auto', 'on', 'off']).default('auto'),
});
export const JanusUndOptions = z.strictObject({});
export const JanusGenOptions = z.strictObject({});

export const FAMILIES = {
  janus: { load: JanusLoadOptions, und: JanusUndOptions, gen: JanusGenOptions },
} as const;
export type Family = keyof typeof FAMILIES;

/** The records generated as Python dataclasses for the families (name → schema). */
export const FAMILY_RECORDS = { JanusLoadOptions, JanusUndOptions, JanusGenOptions } as const;

/** Fills a built-in family's option defaults so the sidecar receives explicit values; other families pass through. */
export function familyOptions(family: string, where: 'load' | 'und' | 'gen', options: Record<string, unknown>): Record<string, unknown> {
  const f = (FAMILIES as Record<string, (typeof FAMILIES)[Family]>)[family];
  return f ? (f[where].parse(options) as Record<string, unknown>) : options;
}
