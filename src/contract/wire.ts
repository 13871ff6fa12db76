/**
 * How a TS declaration becomes a wire declaration. The wire speaks snake_case (Python reads it as
 * is); the SDK's config records are camelCase. `wireRecord` derives the wire schema of a config
 * record mechanically (same field schemas, same defaults, keys in snake_case), so a config field is
 * declared once and never re-mapped by hand. Typed op calls convert their values themselves
 * (src/contract/casing.ts); `toWire` is for a raw `sc.call`, whose args go on the wire as given.
 */
import { resolve } from 'node:path';
import { z } from 'zod';
import type { CamelInput } from './casing.js';

export type Snake<S extends string> = S extends `${infer H}${infer T}`
  ? `${H extends Lowercase<H> ? H : `_${Lowercase<H>}`}${Snake<T>}`
  : S;
export type SnakeKeys<T> = { [K in keyof T as K extends string ? Snake<K> : K]: T[K] };

export const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** The wire form of a config record: the same fields (schemas and defaults) under snake_case keys, strict. */
export function wireRecord<S extends z.ZodRawShape>(
  record: z.ZodObject<S>,
): z.ZodObject<{ [K in keyof S as K extends string ? Snake<K> : K]: S[K] }, z.core.$strict> {
  const shape: Record<string, z.ZodType> = {};
  for (const [k, v] of Object.entries(record.shape)) shape[snake(k)] = v as z.ZodType;
  return z.strictObject(shape) as never;
}

/**
 * A config value in its wire form, for a raw `sc.call`: top-level keys to snake_case (nested values
 * travel unchanged). Not for the typed op methods, which take camelCase and refuse snake_case keys.
 */
export function toWire<T extends Record<string, unknown>>(value: T): SnakeKeys<T> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (v !== undefined) out[snake(k)] = v;
  return out as SnakeKeys<T>;
}

/**
 * The part of a config value that a wire record declares, in its TS form (camelCase): only the keys
 * the record has, so a field added to the config record travels without further code (the op client
 * converts the keys to the wire's).
 */
export function declaredOf<S extends z.ZodObject>(record: S, value: object): Partial<CamelInput<S>> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (v !== undefined && snake(k) in record.shape) out[k] = v;
  return out as Partial<CamelInput<S>>;
}

/**
 * A file or directory the user names. The client resolves it against the caller's working directory
 * before it crosses the wire, so a relative path means what it means where the user typed it (the
 * sidecar runs elsewhere, and remote ranks elsewhere still). On the wire: a non-empty string.
 *
 * Typed `string` on input so `dir: 42` fails to compile; at run time anything else still reaches the
 * string check and is refused by name (the args of an untyped `sc.call` are not checked by the compiler).
 */
export const userPath = z.preprocess((v: string) => (typeof v === 'string' && v ? resolve(v) : v), z.string().min(1));
