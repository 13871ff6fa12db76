/**
 * Family options: what each built-in model family accepts in `model.options` (load) and in
 * `und.options` / `gen.options` (sampling), with their defaults. The sidecar's adapter validates
 * them with the generated schema, so an unknown name is refused by name. A family not listed here
 * (a user's plug-in adapter) validates its own options. Each family is one file here (janus.ts,
 * dimoo.ts, bagel.ts) declaring a `FamilyDeclaration`; this file composes them.
 */
import type { z } from 'zod';
import { ConfigError } from '../../errors.js';
import { bagel } from './bagel.js';
import { dimoo } from './dimoo.js';
import { janus } from './janus.js';

/** What one family's file declares (src/contract/families/<family>.ts). */
export interface FamilyDeclaration {
  /** The option schemas of `model.options` (load), `und.options` and `gen.options`. */
  options: { load: z.ZodObject; und: z.ZodObject; gen: z.ZodObject };
  /** The schemas generated as Python dataclasses (name → schema) for the family's adapter. */
  records: Record<string, z.ZodObject>;
  /** Training-config defaults of this family, filled in where a config leaves them out. */
  configDefaults?: { und?: Record<string, unknown>; gen?: Record<string, unknown> };
}

/** The built-in families by adapter name (`model.adapter`); a new family is its file plus one entry here. */
const DECLARED = { janus, dimoo, bagel } as const;
type Declared = typeof DECLARED;

/** Each built-in family's option schemas by adapter name: `load` (`model.options`), `und`, `gen` (`*.options`). */
export const FAMILIES = Object.fromEntries(Object.entries(DECLARED).map(([name, d]) => [name, d.options])) as {
  readonly [F in keyof Declared]: Declared[F]['options'];
};
export type Family = keyof typeof FAMILIES;

/**
 * Training-config defaults that differ by family, filled in where a config leaves them out (before the
 * shared defaults of src/contract/config.ts apply). Lumina-DiMOO: the paper's rollout size 2 per side.
 */
export const FAMILY_CONFIG_DEFAULTS: Record<string, { und?: Record<string, unknown>; gen?: Record<string, unknown> }> =
  Object.fromEntries(
    Object.entries(DECLARED).flatMap(([name, d]) => ('configDefaults' in d ? [[name, d.configDefaults]] : [])),
  );

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
export const FAMILY_RECORDS: Record<string, z.ZodObject> = Object.assign(
  {},
  ...Object.values(DECLARED).map((d) => d.records),
);

/** Where each kind of family option sits in a training config. */
export const FAMILY_OPTION_FIELDS = { load: 'model.options', und: 'und.options', gen: 'gen.options' } as const;

/**
 * What is wrong with a built-in family's options, one line per problem naming the config field
 * (`model.options.detach_uncond: ...`); empty when they are valid or the family is a plug-in's.
 */
export function familyOptionIssues(
  family: string,
  where: 'load' | 'und' | 'gen',
  options: Record<string, unknown>,
): string[] {
  const f = (FAMILIES as Record<string, (typeof FAMILIES)[Family]>)[family];
  if (!f) return [];
  const r = f[where].safeParse(options);
  if (r.success) return [];
  const field = FAMILY_OPTION_FIELDS[where];
  const known = Object.keys(f[where].shape);
  return r.error.issues.flatMap((i) => {
    if (i.code === 'unrecognized_keys') {
      return i.keys.map(
        (k) =>
          `${field}.${k}: not an option of the ${family} family (${known.length ? `it takes ${known.join(', ')}` : 'it takes none'})`,
      );
    }
    return [`${[field, ...i.path.map(String)].join('.')}: ${i.message}`];
  });
}

/** Fills a built-in family's option defaults so the sidecar receives explicit values; other families pass through. */
export function familyOptions(
  family: string,
  where: 'load' | 'und' | 'gen',
  options: Record<string, unknown>,
): Record<string, unknown> {
  const f = (FAMILIES as Record<string, (typeof FAMILIES)[Family]>)[family];
  if (!f) return options;
  const issues = familyOptionIssues(family, where, options);
  if (issues.length) throw new ConfigError(issues.join('; '));
  return f[where].parse(options) as Record<string, unknown>;
}
