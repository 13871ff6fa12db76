/**
 * One naming convention across the TS surface: camelCase in TypeScript, snake_case on the wire.
 *
 * The op catalogue declares the wire (snake_case, what Python reads). The TS types of an op's args
 * and reply are derived from that one declaration by walking the schema (`Camel*`), and the client
 * converts values with the same walk at run time (`toWireKeys` before a request is validated,
 * `fromWireKeys` after a reply is), so the two cannot drift and nothing is re-mapped by hand.
 *
 * The schema decides what is a field name and what is data:
 * - the declared keys of an object schema are field names: converted (`est_seed` ⇄ `estSeed`);
 * - the keys of a record (`z.record`: family `options`, reward `config`, `sizes`, per-category maps) are
 *   data: never converted, at any depth; their values are converted by the record's value schema;
 * - keys a loose object passes through undeclared are data too: unchanged;
 * - an object marked `metricRecord(...)` keeps its keys as declared (metric names such as `grad_norm`
 *   or `und/clip_frac` are the keys of metrics.jsonl and TensorBoard: one name everywhere).
 */
import { z } from 'zod';
import { BadRequestError } from '../errors.js';

declare const METRIC_KEYS: unique symbol;
/** The type-level mark of `metricRecord`: its keys stay as declared. */
export interface MetricKeys {
  readonly [METRIC_KEYS]: true;
}
const metricRecords = new WeakSet<z.ZodType>();

/** Marks an object schema whose keys are metric names: they keep their spelling in TS as on the wire and in logs. */
export function metricRecord<S extends z.ZodObject>(schema: S): S & MetricKeys {
  metricRecords.add(schema);
  return schema as S & MetricKeys;
}

/** Whether `schema` was marked by `metricRecord` (its keys are names, kept as declared). */
export const isMetricRecord = (schema: z.ZodType): boolean => metricRecords.has(schema);

/** `est_seed` → `estSeed` (the type of `camel`). */
export type Camel<S extends string> = S extends `${infer H}_${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;
/** `est_seed` → `estSeed`: an underscore and the letter or digit after it become that character upper-cased. */
export const camel = (k: string): string => k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

// Through `infer O` so editors and compiler messages show the resulting fields, not this alias.
type CamelKeys<Shape, T, D extends 'in' | 'out'> = {
  [K in keyof T as K extends keyof Shape & string ? Camel<K> : K]: K extends keyof Shape ? Walk<Shape[K], D> : T[K];
} extends infer O
  ? { [K in keyof O]: O[K] }
  : never;
type Walk<S, D extends 'in' | 'out'> = S extends MetricKeys
  ? D extends 'in'
    ? z.input<S>
    : z.output<S>
  : S extends z.ZodObject<infer Shape>
    ? CamelKeys<Shape, D extends 'in' ? z.input<S> : z.output<S>, D>
    : S extends z.ZodOptional<infer I>
      ? Walk<I, D> | undefined
      : S extends z.ZodNullable<infer I>
        ? Walk<I, D> | null
        : S extends z.ZodDefault<infer I> | z.ZodPrefault<infer I>
          ? D extends 'in'
            ? Walk<I, D> | undefined
            : Exclude<Walk<I, D>, undefined>
          : S extends z.ZodArray<infer I>
            ? Array<Walk<I, D>>
            : S extends z.ZodUnion<infer O>
              ? Walk<O[number], D>
              : S extends z.ZodRecord<infer K, infer V>
                ? Record<z.output<K> & PropertyKey, Walk<V, D>>
                : S extends z.ZodPipe<infer A, infer B>
                  ? D extends 'in'
                    ? A extends z.ZodTransform
                      ? z.input<S>
                      : Walk<A, D>
                    : Walk<B, D>
                  : D extends 'in'
                    ? z.input<S>
                    : z.output<S>;

/** What TS code writes for a schema: its input type with declared keys in camelCase. */
export type CamelInput<S> = Walk<S, 'in'>;
/** What TS code reads from a schema: its output type with declared keys in camelCase. */
export type CamelOutput<S> = Walk<S, 'out'>;

interface Def {
  type: string;
  shape?: Record<string, z.ZodType>;
  catchall?: z.ZodType;
  innerType?: z.ZodType;
  element?: z.ZodType;
  options?: z.ZodType[];
  valueType?: z.ZodType;
  in?: z.ZodType;
  out?: z.ZodType;
}
const defOf = (s: z.ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;
const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);

/** The shape of the object schema a union option is (through wrappers), or null. */
function objectOf(s: z.ZodType): Def | null {
  const d = defOf(s);
  if (d.type === 'object') return d;
  if (d.innerType) return objectOf(d.innerType);
  if (d.type === 'pipe' && d.out) return objectOf(d.out);
  return null;
}
const arrayOf = (s: z.ZodType): boolean => {
  const d = defOf(s);
  return d.type === 'array' || (d.innerType ? arrayOf(d.innerType) : false);
};

/** Field-name maps per object schema (wire key → TS key and back), built once. */
const keyMaps = new WeakMap<Def, { toTs: Map<string, string>; toWire: Map<string, string> }>();
function keyMap(d: Def): { toTs: Map<string, string>; toWire: Map<string, string> } {
  let m = keyMaps.get(d);
  if (!m) {
    m = { toTs: new Map(), toWire: new Map() };
    for (const k of Object.keys(d.shape ?? {})) {
      const c = camel(k);
      // Two wire keys that read the same in camelCase would make the TS type ambiguous: a declaration error.
      if (m.toWire.has(c)) throw new Error(`contract: wire keys '${m.toWire.get(c)}' and '${k}' are both '${c}' in TS`);
      m.toTs.set(k, c);
      m.toWire.set(c, k);
    }
    keyMaps.set(d, m);
  }
  return m;
}

type Dir = 'toWire' | 'fromWire';

function convert(s: z.ZodType, v: unknown, dir: Dir, path: Array<string | number>): unknown {
  if (v === undefined || v === null) return v;
  const d = defOf(s);
  switch (d.type) {
    case 'object': {
      if (!isPlainObject(v)) return v;
      if (metricRecords.has(s)) return v;
      const { toTs, toWire } = keyMap(d);
      const names = dir === 'toWire' ? toWire : toTs;
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        const to = names.get(k);
        if (to === undefined) {
          // A wire name written in TS (`est_seed` for `estSeed`) would otherwise pass the wire check as if it were right.
          if (dir === 'toWire' && toTs.has(k) && toTs.get(k) !== k) {
            throw new BadRequestError(
              `${[...path, k].join('.')}: TS fields are camelCase: write '${toTs.get(k)}', not '${k}'`,
              false,
              { field: [...path, toTs.get(k)].join('.'), side: 'client' },
            );
          }
          out[k] = x; // undeclared: a loose object's pass-through data, or an unknown field the strict check names
          continue;
        }
        const field = (d.shape as Record<string, z.ZodType>)[dir === 'toWire' ? to : k];
        out[to] = convert(field, x, dir, [...path, dir === 'toWire' ? k : to]);
      }
      return out;
    }
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
      return convert(d.innerType as z.ZodType, v, dir, path);
    case 'array':
      return Array.isArray(v) ? v.map((x, i) => convert(d.element as z.ZodType, x, dir, [...path, i])) : v;
    case 'union': {
      const opts = d.options ?? [];
      const pick = isPlainObject(v) ? opts.find((o) => objectOf(o)) : Array.isArray(v) ? opts.find(arrayOf) : undefined;
      return pick ? convert(pick, v, dir, path) : v;
    }
    case 'record': {
      if (!isPlainObject(v)) return v;
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[k] = convert(d.valueType as z.ZodType, x, dir, [...path, k]);
      return out;
    }
    case 'pipe':
      return dir === 'toWire'
        ? defOf(d.in as z.ZodType).type === 'transform'
          ? v
          : convert(d.in as z.ZodType, v, dir, path)
        : convert(d.out as z.ZodType, v, dir, path);
    default:
      return v;
  }
}

/** A TS value of `schema` in its wire form: declared keys to snake_case (records and pass-through keys unchanged). */
export function toWireKeys<S extends z.ZodType>(schema: S, value: CamelInput<S> | undefined): z.input<S> {
  return convert(schema, value, 'toWire', []) as z.input<S>;
}

/** A parsed wire value of `schema` in its TS form: declared keys to camelCase. */
export function fromWireKeys<S extends z.ZodType>(schema: S, value: z.output<S>): CamelOutput<S> {
  return convert(schema, value, 'fromWire', []) as CamelOutput<S>;
}

/** The container schema (object, array, record) that a path step of kind `step` walks into, through wrappers and unions. */
function container(s: z.ZodType | undefined, step: string | number): z.ZodType | undefined {
  while (s) {
    const d = defOf(s);
    if (d.type === 'object' || d.type === 'array' || d.type === 'record') return s;
    if (d.type === 'union') s = (d.options ?? []).find((o) => (typeof step === 'number' ? arrayOf(o) : objectOf(o)));
    else if (d.type === 'pipe') s = d.out;
    else s = d.innerType;
  }
  return undefined;
}

/** The TS spelling of a wire path (an issue's path): declared keys to camelCase, record keys and indices as they are. */
export function tsPath(schema: z.ZodType, path: ReadonlyArray<PropertyKey>): Array<string | number> {
  const out: Array<string | number> = [];
  let s: z.ZodType | undefined = schema;
  for (const p of path) {
    const step = typeof p === 'number' ? p : String(p);
    const c = container(s, step);
    const d = c && defOf(c);
    if (d?.type === 'object' && typeof step === 'string') {
      out.push(metricRecords.has(c as z.ZodType) ? step : (keyMap(d).toTs.get(step) ?? step));
      s = d.shape?.[step];
    } else {
      out.push(step);
      s = d?.type === 'array' ? d.element : d?.type === 'record' ? d.valueType : undefined;
    }
  }
  return out;
}
