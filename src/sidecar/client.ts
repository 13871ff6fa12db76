/**
 * The typed client: one method per catalogued op, derived from `src/contract/ops.ts`.
 *
 *   const { args } = await sc.train.update({ handles, loss, estSeed: 7 }, { adv_und, adv_gen });
 *   args.optimizer_step                             // typed from the op's declared reply (a metric record: names as logged)
 *
 * Requests are validated before they leave (defaults filled in, unknown/missing/mistyped fields →
 * `BadRequestError` naming the field), replies when they arrive (a field the sidecar renamed or
 * dropped → `InternalError` naming it). `op.name` → `sc.op.name`, snake_case methods in camelCase
 * (`train.prepare_reward` → `sc.train.prepareReward`). Args and replies are camelCase in TS and
 * snake_case on the wire: this module converts them, by the op's schema (src/contract/casing.ts), and
 * nowhere else does. Payload names are wire names (`adv_und`). This is the only module in `src/` that
 * names an op by string; `sc.call(op, ...)` stays for users' own ops (raw wire args, no conversion).
 */
import type * as arrow from 'apache-arrow';
import type { z } from 'zod';
import { camel, fromWireKeys, toWireKeys, tsPath } from '../contract/casing.js';
import { OPS, type OpArgs, type OpName, type OpReply, type PayloadSpecs } from '../contract/ops.js';
import { BadRequestError, SidecarError } from '../errors.js';
import type { Payloads } from '../protocol/payload.js';
import { Tensor } from '../protocol/tensor.js';
import type { CallOptions, CallResult } from './controller.js';

type Camel<S extends string> = S extends `${infer H}_${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;
type NsOf<N> = N extends `${infer A}.${string}` ? A : never;
type MethodOf<N, A extends string> = N extends `${A}.${infer M}` ? M : never;

/** A typed op reply: `args` typed from the op's declared reply, plus tensors and tables by payload name. */
export interface OpResult<N extends OpName> {
  /** The reply's arguments, validated against the op's reply schema. */
  args: OpReply<N>;
  /** Raw payloads by name. */
  tensors: Record<string, Tensor>;
  /** Arrow payloads by name. */
  tables: Record<string, arrow.Table>;
}
/** An op as a method: args may be left out when every field has a default. */
export type OpMethod<N extends OpName> =
  {} extends OpArgs<N>
    ? (args?: OpArgs<N>, payloads?: Payloads, opts?: CallOptions) => Promise<OpResult<N>>
    : (args: OpArgs<N>, payloads?: Payloads, opts?: CallOptions) => Promise<OpResult<N>>;

/** One method per catalogued op: `ns.snake_name` → `client.ns.camelName(args, payloads, opts)`. */
export type OpClient = {
  [A in NsOf<OpName>]: { [M in MethodOf<OpName, A> as Camel<M>]: OpMethod<`${A}.${M}` & OpName> };
} & { [N in OpName as N extends `${string}.${string}` ? never : N]: OpMethod<N> };

type RawCall = (
  op: string,
  args: Record<string, unknown>,
  payloads: Payloads,
  opts?: CallOptions,
) => Promise<CallResult>;

/**
 * The first issue of a failed check. A request's path is spelled as the caller's TS code wrote it
 * (`schema` given); a reply's as the sidecar sent it (a reply that misses the contract is the sidecar's fault).
 */
function issueText(e: z.ZodError, schema?: z.ZodType): { msg: string; field: string | null } {
  const i = e.issues[0];
  const path = (schema ? tsPath(schema, i.path) : i.path.map(String)).join('.');
  if (i.code === 'unrecognized_keys') {
    const keys = (i as { keys: string[] }).keys;
    return {
      msg: `unknown field(s) ${keys.join(', ')}${path ? ` in ${path}` : ''}`,
      field: [path, keys[0]].filter(Boolean).join('.'),
    };
  }
  return { msg: `${path || '(args)'}: ${i.message}`, field: path || null };
}

function checkPayloads(specs: PayloadSpecs | undefined, payloads: Payloads, what: string): void {
  if (specs === 'any') return;
  const declared = specs ?? {};
  for (const name of Object.keys(payloads)) {
    if (!(name in declared))
      throw new BadRequestError(
        `${what}: unknown payload '${name}'; declared: ${Object.keys(declared).join(', ') || 'none'}`,
        false,
        { field: name },
      );
  }
  for (const [name, spec] of Object.entries(declared)) {
    const p = payloads[name];
    if (p === undefined) {
      if (!spec.optional) throw new BadRequestError(`${what}: missing payload '${name}'`, false, { field: name });
      continue;
    }
    const isTensor = p instanceof Tensor;
    if ((spec.enc ?? 'raw') === 'raw' && !isTensor)
      throw new BadRequestError(`${what}: payload '${name}' must be a Tensor`, false, { field: name });
    if (isTensor && spec.dtype && !spec.dtype.includes(p.dtype))
      throw new BadRequestError(
        `${what}: payload '${name}' must have dtype ${spec.dtype.join(' or ')}, got ${p.dtype}`,
        false,
        { field: name },
      );
    if (isTensor && spec.rank !== undefined && p.shape.length !== spec.rank)
      throw new BadRequestError(
        `${what}: payload '${name}' must have rank ${spec.rank}, got ${p.shape.length}`,
        false,
        { field: name },
      );
  }
}

/** TS args in their wire form (declared keys to snake_case); a wire name written in TS is refused by name. */
function wireArgs<N extends OpName>(op: N, args: OpArgs<N> | undefined, rank?: number): unknown {
  try {
    return toWireKeys(OPS[op].args as z.ZodType, (args ?? {}) as never);
  } catch (e) {
    if (e instanceof BadRequestError)
      throw new BadRequestError(`${op}${rank === undefined ? '' : ` (rank ${rank})`}: ${e.message}`, false, {
        ...e.detail,
        ...(rank === undefined ? {} : { rank }),
      });
    throw e;
  }
}

/** A reply checked against the contract, then in its TS form (declared keys to camelCase). */
function tsReply<N extends OpName>(op: N, wire: Record<string, unknown>, rank?: number): OpReply<N> {
  const schema = OPS[op].reply as z.ZodType;
  const rep = schema.safeParse(wire);
  if (!rep.success) {
    const { msg, field } = issueText(rep.error);
    const who = rank === undefined ? `${op} reply` : `${op} reply of rank ${rank}`;
    throw SidecarError.generate('internal', `${who} does not match the contract (src/contract/ops.ts): ${msg}`, false, {
      field,
      ...(rank === undefined ? {} : { rank }),
      reply: wire,
    });
  }
  return fromWireKeys(schema, rep.data) as OpReply<N>;
}

/** Calls a catalogued op: validate the request, send it, validate the reply. */
export async function invoke<N extends OpName>(
  raw: RawCall,
  op: N,
  args: OpArgs<N> | undefined,
  payloads: Payloads = {},
  opts?: CallOptions,
): Promise<OpResult<N>> {
  const decl = OPS[op];
  const req = decl.args.safeParse(wireArgs(op, args));
  if (!req.success) {
    const { msg, field } = issueText(req.error, decl.args);
    throw new BadRequestError(`${op}: ${msg}`, false, { field, side: 'client' });
  }
  checkPayloads('payloads' in decl ? decl.payloads : undefined, payloads, op);
  const r = await raw(op, req.data as Record<string, unknown>, payloads, opts);
  return { args: tsReply(op, r.args), tensors: r.tensors, tables: r.tables };
}

type RawWorldCall = (
  op: string,
  args: Array<Record<string, unknown>>,
  payloads: Payloads[],
  opts?: CallOptions,
) => Promise<CallResult[]>;

/** Whether the catalogue marks `op` as a collective (every rank runs it, in one order). */
export const isWorldOp = (op: string): boolean => (OPS as Record<string, { scope?: string }>)[op]?.scope === 'world';

/**
 * Calls a world-scoped op on every rank with that rank's args and payloads (index = rank): each
 * request is validated before any leaves; replies come back in rank order, each validated.
 */
export async function invokeWorld<N extends OpName>(
  raw: RawWorldCall,
  op: N,
  args: ReadonlyArray<OpArgs<N>>,
  payloads: ReadonlyArray<Payloads> = [],
  opts?: CallOptions,
): Promise<Array<OpResult<N>>> {
  if (!isWorldOp(op))
    throw new BadRequestError(`${op} is a per-rank op: call it on one rank ({ rank }), not on the world`, false, {
      side: 'client',
    });
  const decl = OPS[op];
  const sent = args.map((a, r) => {
    const req = decl.args.safeParse(wireArgs(op, a, r));
    if (!req.success) {
      const { msg, field } = issueText(req.error, decl.args);
      throw new BadRequestError(`${op} (rank ${r}): ${msg}`, false, { field, rank: r, side: 'client' });
    }
    checkPayloads('payloads' in decl ? decl.payloads : undefined, payloads[r] ?? {}, `${op} (rank ${r})`);
    return req.data as Record<string, unknown>;
  });
  const rs = await raw(
    op,
    sent,
    args.map((_, r) => payloads[r] ?? {}),
    opts,
  );
  return rs.map((r, rank) => ({ args: tsReply(op, r.args, rank), tensors: r.tensors, tables: r.tables }));
}

/** Builds the `sc.<ns>.<method>` tree over a raw call function. */
export function makeClient(raw: RawCall): OpClient {
  const tree: Record<string, unknown> = {};
  for (const op of Object.keys(OPS) as OpName[]) {
    const fn = (args?: Record<string, unknown>, payloads?: Payloads, opts?: CallOptions) =>
      invoke(raw, op, args as never, payloads, opts);
    const dot = op.indexOf('.');
    if (dot < 0) {
      tree[op] = fn;
      continue;
    }
    const ns = op.slice(0, dot);
    ((tree[ns] ??= {}) as Record<string, unknown>)[camel(op.slice(dot + 1))] = fn;
  }
  return tree as OpClient;
}
