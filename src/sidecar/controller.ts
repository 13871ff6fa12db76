/**
 * The controller end of protocol v1: two bound ROUTER sockets (`ctrl` for small messages,
 * heartbeats and cancels; `data` for chunk streams with a byte-credit window), the table of
 * registered ranks, and the table of pending requests. One receive loop and one send queue per
 * socket (zeromq.js allows a single pending send/receive per socket).
 */
import { randomUUID } from 'node:crypto';
import type * as arrow from 'apache-arrow';
import * as zmq from 'zeromq';
import {
  ConfigError,
  ProtocolError,
  RanksMissingError,
  SidecarError,
  SidecarStartError,
  type WireErrorCode,
} from '../errors.js';
import { type AuthEvent, type CurveOptions, readKeyPair, readPublicKey, ZapHandler } from './curve.js';
import { DEFAULT_LIMITS, Flags, type KindName, type Limits, WIRE_MAJOR, WIRE_MINOR } from '../protocol/constants.js';
import { decodeHeaderFrame, encodeHeaderFrame, salvageIds, type BufferDesc } from '../protocol/header.js';
import {
  checkDescriptors,
  decodePayloads,
  describePayloads,
  type OutgoingBuffer,
  type Payloads,
  streamLayout,
} from '../protocol/payload.js';
import type { Tensor } from '../protocol/tensor.js';
import { createLogger, type Logger } from '../util/log.js';

/** Per-call options of an op call. */
export interface CallOptions {
  /** Aborting it cancels the call: the rank is told to stop and the call rejects. */
  signal?: AbortSignal;
  /** Relative deadline; past it the call rejects with code `deadline` and the rank is told to stop. */
  deadlineMs?: number;
  /** Receives the op's progress messages (`prog`) as the rank sends them. */
  onProgress?: (p: { done: number; total?: number; msg?: string }) => void;
  /** Which rank serves the call (default 0). */
  rank?: number;
}

/** An untyped op reply (from `sc.call`): reply args, raw tensors and Arrow tables by payload name. */
export interface CallResult {
  /** The reply's arguments, as the rank sent them. */
  args: Record<string, unknown>;
  /** Raw payloads by name. */
  tensors: Record<string, Tensor>;
  /** Arrow payloads by name. */
  tables: Record<string, arrow.Table>;
}

/** A registered rank as the controller sees it; `caps` are its capabilities (see {@link CAPABILITIES}). */
export interface RankInfo {
  /** Rank number, from 0. */
  rank: number;
  /** World size the rank belongs to. */
  world: number;
  /** Host name the rank reported. */
  host?: string;
  /** Process id on that host. */
  pid?: number;
  /** Unique per rank process: a restarted rank registers as a new incarnation. */
  incarnation: string;
  /** Capabilities the rank announced in its hello. */
  caps: string[];
  /** False once the rank was lost (exit, heartbeat timeout, bye). */
  alive: boolean;
  /** Any other fields of the rank's hello (a newer minor's). */
  extra: Record<string, unknown>;
}

interface RankState {
  rid: Buffer;
  key: string;
  info: RankInfo;
  lastSeen: number;
  /** Bytes this side may still stream to the rank before it grants more. */
  credit: number;
  creditWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }>;
  inStreams: Map<number, InStream>;
}

interface InStream {
  kind: KindName;
  header: Record<string, unknown>;
  descs: BufferDesc[];
  offsets: number[];
  buf: Buffer;
  seq: number;
  /** Index of the buffer being filled and the next offset expected inside the stream. */
  cur: number;
  next: number;
  lastActivity: number;
}

interface Pending {
  id: number;
  op: string;
  rank: RankState;
  resolve: (r: CallResult) => void;
  reject: (e: Error) => void;
  onProgress?: CallOptions['onProgress'];
  cleanup: () => void;
}

export interface ControllerOptions {
  ctrlEndpoint: string;
  dataEndpoint: string;
  limits?: Partial<Limits>;
  hbMs?: number;
  deadMs?: number;
  run?: string;
  /** CURVE with an allow-list (required for tcp:// unless `plaintext`); see src/sidecar/curve.ts. */
  curve?: CurveOptions;
  /** Accept plaintext tcp:// ranks (a trusted private network only). */
  plaintext?: boolean;
  /** Every authentication decision and every refused handshake (default: refusals to the logger, as warnings). */
  onAuth?: (ev: AuthEvent | { allowed: false; key: ''; address: string; mechanism: 'mismatch' }) => void;
  /** Where the controller's own messages go (default: `createLogger()`, see src/util/log.ts). */
  logger?: Logger;
}

/** Cumulative counters of a controller since it started (see {@link Sidecar.stats}). */
export interface ControllerStats {
  /** Replies that arrived after their call had already settled here (cancelled, timed out). */
  lateReplies: number;
  /** Errors a rank reported about a message it could not attribute to a request. */
  rankErrors: number;
  /** Messages dropped as malformed. */
  badFrames: number;
  /** Chunk streams received. */
  streamsIn: number;
  /** Chunk streams sent. */
  streamsOut: number;
  /** Connection attempts refused: unknown CURVE keys and handshakes that failed (plaintext clients). */
  refused: number;
  /** Bytes this controller sent to and received from ranks (all frames, both sockets). */
  bytesOut: number;
  /** Bytes received from ranks. */
  bytesIn: number;
}

class SendQueue {
  private tail: Promise<void> = Promise.resolve();
  constructor(
    private readonly sock: zmq.Router,
    private readonly stats: ControllerStats,
  ) {}
  send(frames: Array<Buffer | Uint8Array>): Promise<void> {
    for (const f of frames) this.stats.bytesOut += f.byteLength;
    const p = this.tail.then(() => this.sock.send(frames));
    this.tail = p.catch(() => undefined);
    return p;
  }
}

/**
 * A sidecar error message led by its op's name, once: the sidecar's contract checks already begin
 * with it (`train.load: missing field(s) model`) and an unknown op names itself (`unknown op 'x.y'`).
 */
export function withOp(op: string, msg: string): string {
  return msg.startsWith(`${op}:`) || msg.startsWith(`${op} `) || msg.includes(`'${op}'`) ? msg : `${op}: ${msg}`;
}

export class Controller {
  readonly limits: Limits;
  readonly hbMs: number;
  readonly deadMs: number;
  readonly run: string;
  readonly stats: ControllerStats = {
    lateReplies: 0,
    rankErrors: 0,
    badFrames: 0,
    streamsIn: 0,
    streamsOut: 0,
    refused: 0,
    bytesOut: 0,
    bytesIn: 0,
  };
  lastRankError?: string;
  private readonly ctrl: zmq.Router;
  private readonly data: zmq.Router;
  private readonly zap?: ZapHandler;
  private readonly ctrlQ: SendQueue;
  private readonly dataQ: SendQueue;
  private readonly ranks = new Map<string, RankState>();
  private readonly pending = new Map<number, Pending>();
  /** Ids answered locally (cancel/deadline/rank loss) whose late replies are dropped and counted. */
  private readonly settledLocally = new Set<number>();
  private nextId = 1;
  private nextSid = 1;
  private hbTimer?: NodeJS.Timeout;
  private lastTick = Date.now();
  private closed = false;
  /** Test hook: sees every decoded message from a rank before dispatch. */
  _tap?: (kind: KindName, header: Record<string, unknown>, payload: Buffer[]) => void;
  private rankWaiters: Array<() => void> = [];
  private readonly dataSeen = new Set<string>();
  private readonly listeners = new Set<(ev: { type: 'rank_lost'; rank: number; reason: string }) => void>();

  private readonly log: Logger;

  constructor(private readonly opts: ControllerOptions) {
    this.log = opts.logger ?? createLogger();
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.hbMs = opts.hbMs ?? 500;
    this.deadMs = opts.deadMs ?? 4000;
    this.run = opts.run ?? randomUUID();
    const tcp = [opts.ctrlEndpoint, opts.dataEndpoint].some((e) => e.startsWith('tcp://'));
    if (tcp && !opts.curve && !opts.plaintext) {
      throw new ConfigError(
        `${opts.ctrlEndpoint}: tcp:// endpoints need CURVE ({ curve: { key, allow } }; \`pairuni keys\` makes key pairs), or plaintext: true on a trusted private network`,
      );
    }
    let security: Record<string, unknown> = {};
    if (opts.curve) {
      const kp = readKeyPair(opts.curve.key);
      const allow = opts.curve.allow.map(readPublicKey);
      if (!allow.length) throw new ConfigError('curve.allow is empty: no rank could connect');
      // A context of its own: one ZAP handler per context, and tests run several controllers.
      const context = new zmq.Context();
      const report =
        opts.onAuth ??
        ((ev) => {
          if (!ev.allowed)
            this.log.warn(
              `[pairuni] refused a rank connection from ${ev.address || '?'}: ${ev.mechanism === 'mismatch' ? 'handshake failed (plaintext or wrong server key)' : `key ${ev.key || '(none)'} is not on the allow-list`}`,
            );
        });
      this.zap = new ZapHandler(
        context,
        allow,
        (ev) => {
          if (!ev.allowed) this.stats.refused++;
          report(ev);
        },
        this.log,
      );
      this.onHandshakeError = (address: string) => {
        this.stats.refused++;
        report({ allowed: false, key: '', address, mechanism: 'mismatch' });
      };
      security = {
        context,
        curveServer: true,
        curveSecretKey: kp.secretKey,
        curvePublicKey: kp.publicKey,
        zapDomain: 'pairuni',
      };
    }
    const common = {
      ...security,
      linger: 0,
      mandatory: true,
      // Routing ids are unique per rank incarnation, so a reconnect (e.g. after libzmq dropped an
      // oversize message) is the same process and must take over its id.
      handover: true,
      sendTimeout: 5000,
      heartbeatInterval: 1000,
      heartbeatTimeout: 5000,
      maxMessageSize: this.limits.chunkBytes + this.limits.maxHeaderBytes + 64 * 1024,
    };
    this.ctrl = new zmq.Router({ ...common, sendHighWaterMark: 10_000, receiveHighWaterMark: 10_000 });
    this.data = new zmq.Router({ ...common, sendHighWaterMark: 64, receiveHighWaterMark: 64 });
    this.ctrlQ = new SendQueue(this.ctrl, this.stats);
    this.dataQ = new SendQueue(this.data, this.stats);
  }

  private onHandshakeError?: (address: string) => void;

  async start(): Promise<void> {
    if (this.zap) {
      await this.zap.start(); // before the ROUTERs bind: the first handshake asks it
      for (const sock of [this.ctrl, this.data]) {
        // A plaintext client against a CURVE server fails here (mechanism mismatch), before ZAP.
        sock.events.on('handshake:error:protocol', (ev) => this.onHandshakeError?.(String(ev.address ?? '')));
        sock.events.on('handshake:error:other', (ev) => this.onHandshakeError?.(String(ev.address ?? '')));
      }
    }
    for (const [sock, endpoint] of [
      [this.ctrl, this.opts.ctrlEndpoint],
      [this.data, this.opts.dataEndpoint],
    ] as const) {
      try {
        await sock.bind(endpoint);
      } catch (e) {
        // Release what did bind (the other socket, the ZAP handler): a caller that retries on another
        // port must not find this one still held by a controller nobody can close.
        await this.close('bind failed');
        throw new SidecarStartError(`could not bind ${endpoint}: ${(e as Error).message}`, '', { cause: e });
      }
    }
    void this.loop(this.ctrl, false);
    void this.loop(this.data, true);
    this.hbTimer = setInterval(() => this.heartbeat(), this.hbMs);
    this.hbTimer.unref();
  }

  onEvent(fn: (ev: { type: 'rank_lost'; rank: number; reason: string }) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  rankInfos(): RankInfo[] {
    return [...this.ranks.values()].map((r) => ({ ...r.info })).sort((a, b) => a.rank - b.rank);
  }

  /** The number of ranks this controller serves (set by `waitForRanks`). */
  world = 1;

  /** Ranks 0..world-1 that are not connected now. */
  missingRanks(world = this.world, accept?: (r: RankInfo) => boolean): number[] {
    const live = new Set(
      this.liveRanks()
        .filter((r) => !accept || accept(r.info))
        .map((r) => r.info.rank),
    );
    return Array.from({ length: world }, (_, i) => i).filter((i) => !live.has(i));
  }

  /**
   * Resolves once ranks 0..world-1 have all said hello (on both sockets); past `timeoutMs` it throws
   * a RanksMissingError naming the ranks that did not.
   */
  async waitForRanks(
    world: number,
    timeoutMs: number,
    isAborted?: () => Error | undefined,
    accept?: (r: RankInfo) => boolean,
  ): Promise<void> {
    this.world = world;
    const deadline = Date.now() + timeoutMs;
    while (this.missingRanks(world, accept).length > 0) {
      const err = isAborted?.();
      if (err) throw err;
      if (this.closed) throw SidecarError.generate('rank_lost', 'controller closed while waiting for ranks');
      const left = deadline - Date.now();
      if (left <= 0) {
        const missing = this.missingRanks(world, accept);
        throw new RanksMissingError(
          `rank${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of a world of ${world} did not say hello within ${timeoutMs} ms`,
          missing,
          world,
        );
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 100));
        this.rankWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  private liveRanks(): RankState[] {
    return [...this.ranks.values()].filter((r) => r.info.alive && this.dataSeen.has(r.key));
  }

  private rankByNumber(n: number): RankState | undefined {
    return [...this.ranks.values()].find((r) => r.info.rank === n && r.info.alive);
  }

  // ---------------------------------------------------------------- receive

  private async loop(sock: zmq.Router, isData: boolean): Promise<void> {
    try {
      for await (const frames of sock) {
        if (this.closed) break;
        try {
          this.onFrames(frames as Buffer[], isData);
        } catch (e) {
          // A bug in dispatch must not stop the loop; surface it on pending calls of that rank.
          this.log.error('[pairuni] controller dispatch error:', e);
        }
      }
    } catch (e) {
      if (!this.closed) this.log.error('[pairuni] controller socket loop ended:', e);
    }
  }

  private onFrames(frames: Buffer[], isData: boolean): void {
    for (const f of frames) this.stats.bytesIn += f.byteLength;
    const [rid, f0, ...payload] = frames;
    if (!rid || !f0) {
      this.stats.badFrames++;
      return;
    }
    const key = rid.toString('hex');
    // A rank is usable once both of its connections are up: hello on ctrl, and any message on data
    // (ranks send an hb there first), so the first chunk stream cannot race the data connection.
    if (isData && !this.dataSeen.has(key)) {
      this.dataSeen.add(key);
      this.wakeRankWaiters();
    }
    const rank = this.ranks.get(key);
    let dec;
    try {
      dec = decodeHeaderFrame(f0, { maxHeaderBytes: this.limits.maxHeaderBytes });
    } catch (e) {
      this.stats.badFrames++;
      const pe = e instanceof ProtocolError ? e : new ProtocolError('bad_request', String(e));
      const { re } = salvageIds(f0);
      if (re !== undefined && this.pending.has(re)) {
        this.rejectPending(
          re,
          SidecarError.generate(pe.wireCode, `reply to request ${re} is malformed: ${pe.message}`),
        );
      }
      this.replyError(rid, undefined, pe.wireCode, pe.message);
      return;
    }
    if (rank) rank.lastSeen = Date.now();
    const { kind, header, flags } = dec;
    if (isData && kind === 'hb') return;
    this._tap?.(kind, header, payload);
    if (kind === 'hello') return this.onHello(rid, key, header, dec.minor);
    if (!rank || !rank.info.alive) {
      this.stats.badFrames++;
      this.replyError(rid, undefined, 'bad_request', `${kind} before hello`);
      return;
    }
    try {
      if (isData) this.onData(rank, kind, header, flags, payload);
      else this.onCtrl(rank, kind, header, flags, payload);
    } catch (e) {
      this.stats.badFrames++;
      const pe = e instanceof ProtocolError ? e : new ProtocolError('internal', String(e));
      const re = typeof header.re === 'number' ? header.re : undefined;
      if (re !== undefined)
        this.rejectPending(re, SidecarError.generate(pe.wireCode, `reply to request ${re}: ${pe.message}`));
      else this.replyError(rid, undefined, pe.wireCode, pe.message);
    }
  }

  private onHello(rid: Buffer, key: string, h: Record<string, unknown>, minor: number): void {
    const wire = h.wire as [number, number];
    if (!(wire[0] <= WIRE_MAJOR && WIRE_MAJOR <= wire[1])) {
      this.replyError(
        rid,
        undefined,
        'unsupported_version',
        `controller speaks wire ${WIRE_MAJOR}, rank offers ${wire[0]}..${wire[1]}`,
      );
      return;
    }
    if (this.ranks.has(key)) {
      this.replyError(
        rid,
        undefined,
        'bad_request',
        'duplicate hello for this routing id (use a new incarnation id per process)',
      );
      return;
    }
    const rankNo = h.rank as number;
    const clash = this.rankByNumber(rankNo);
    if (clash) this.markDead(clash, `replaced by a new incarnation (${h.inc})`);
    const { wire: _w, minor: _m, caps, rank, world, host, pid, inc, ...extra } = h;
    const st: RankState = {
      rid,
      key,
      info: {
        rank: rank as number,
        world: world as number,
        host: host as string | undefined,
        pid: pid as number | undefined,
        incarnation: inc as string,
        caps: caps as string[],
        alive: true,
        extra,
      },
      lastSeen: Date.now(),
      credit: this.limits.windowBytes,
      creditWaiters: [],
      inStreams: new Map(),
    };
    this.ranks.set(key, st);
    this.wakeRankWaiters();
    void this.ctrlQ
      .send([
        rid,
        encodeHeaderFrame('welcome', {
          major: WIRE_MAJOR,
          minor: Math.min(WIRE_MINOR, minor),
          run: this.run,
          hb_ms: this.hbMs,
          dead_ms: this.deadMs,
          limits: {
            stall_ms: this.limits.stallMs,
            chunk: this.limits.chunkBytes,
            max_msg: this.limits.maxMessageBytes,
            window: this.limits.windowBytes,
            max_hdr: this.limits.maxHeaderBytes,
          },
        }),
      ])
      .catch(() => undefined);
  }

  private wakeRankWaiters(): void {
    const ws = this.rankWaiters;
    this.rankWaiters = [];
    ws.forEach((w) => w());
  }

  private onCtrl(rank: RankState, kind: KindName, h: Record<string, unknown>, flags: number, payload: Buffer[]): void {
    switch (kind) {
      case 'hb':
        return;
      case 'res': {
        if (flags & Flags.streamed)
          throw new ProtocolError('bad_request', 'streamed replies travel on the data socket');
        const p = this.takePending(h.re as number);
        if (!p) return;
        const descs = (h.b as BufferDesc[] | undefined) ?? [];
        checkDescriptors(descs, this.limits);
        try {
          const dec = decodePayloads(descs, payload);
          p.resolve({ args: (h.a as Record<string, unknown>) ?? {}, ...dec });
        } catch (e) {
          p.reject(asSidecarError(e, `reply to ${p.op}`));
        }
        return;
      }
      case 'err': {
        const err = h.err as {
          code: WireErrorCode;
          msg: string;
          retryable?: boolean;
          detail?: Record<string, unknown>;
        };
        if (h.re === undefined) {
          this.stats.rankErrors++;
          this.lastRankError = `[${err.code}] ${err.msg}`;
          return;
        }
        const p = this.takePending(h.re as number);
        if (p)
          p.reject(SidecarError.generate(err.code, withOp(p.op, err.msg), err.retryable ?? false, err.detail ?? {}));
        return;
      }
      case 'prog': {
        const p = this.pending.get(h.re as number);
        p?.onProgress?.({
          done: h.done as number,
          total: h.total as number | undefined,
          msg: h.msg as string | undefined,
        });
        return;
      }
      case 'bye':
        this.markDead(rank, `rank said bye${h.reason ? `: ${h.reason}` : ''}`);
        return;
      default:
        throw new ProtocolError('bad_request', `unexpected ${kind} on the ctrl socket`);
    }
  }

  private onData(rank: RankState, kind: KindName, h: Record<string, unknown>, flags: number, payload: Buffer[]): void {
    if (kind === 'credit') {
      rank.credit += h.n as number;
      const ws = rank.creditWaiters;
      rank.creditWaiters = [];
      ws.forEach((w) => w.resolve());
      return;
    }
    if (kind === 'res' && flags & Flags.streamed) {
      const st = h.st as { sid: number; tot: number } | undefined;
      if (!st) throw new ProtocolError('bad_request', 'streamed message without st');
      if (rank.inStreams.has(st.sid)) throw new ProtocolError('bad_request', `stream id ${st.sid} reused while open`);
      if (payload.length) throw new ProtocolError('bad_request', 'streamed header must not carry payload frames');
      const descs = (h.b as BufferDesc[] | undefined) ?? [];
      checkDescriptors(descs, this.limits);
      const { offsets, total } = streamLayout(descs);
      if (total !== st.tot)
        throw new ProtocolError('bad_request', `stream tot ${st.tot} does not match its descriptors (${total})`);
      const s: InStream = {
        kind,
        header: h,
        descs,
        offsets,
        buf: Buffer.allocUnsafeSlow(total),
        seq: 0,
        cur: 0,
        next: 0,
        lastActivity: Date.now(),
      };
      this.skipEmpty(s);
      rank.inStreams.set(st.sid, s);
      this.stats.streamsIn++;
      if (s.cur >= descs.length) this.finishStream(rank, st.sid, s);
      return;
    }
    if (kind === 'chunk') {
      const sid = h.sid as number;
      const s = rank.inStreams.get(sid);
      if (!s) throw new ProtocolError('bad_request', `chunk for unknown stream ${sid}`);
      const fail = (msg: string) => {
        rank.inStreams.delete(sid);
        const re = s.header.re as number;
        this.rejectPending(
          re,
          SidecarError.generate('bad_request', `broken chunk stream ${sid} for request ${re}: ${msg}`),
        );
        return new ProtocolError('bad_request', msg);
      };
      if (payload.length !== 1) throw fail(`chunk carries ${payload.length} frames, expected 1`);
      const bytes = payload[0];
      if (h.seq !== s.seq) throw fail(`chunk seq ${h.seq}, expected ${s.seq}`);
      if (h.off !== s.next) throw fail(`chunk offset ${h.off}, expected ${s.next}`);
      const end = s.offsets[s.cur] + s.descs[s.cur].n;
      if (bytes.byteLength === 0 || s.next + bytes.byteLength > end || bytes.byteLength > this.limits.chunkBytes) {
        throw fail(`chunk of ${bytes.byteLength} bytes overruns buffer ${s.cur}`);
      }
      s.buf.set(bytes, s.next);
      s.seq++;
      s.next += bytes.byteLength;
      s.lastActivity = Date.now();
      if (s.next === end) {
        s.cur++;
        this.skipEmpty(s);
      }
      void this.dataQ.send([rank.rid, encodeHeaderFrame('credit', { n: bytes.byteLength })]).catch(() => undefined);
      const done = s.cur >= s.descs.length;
      if (Boolean(h.last) !== done)
        throw fail(done ? 'stream complete but chunk not marked last' : 'last chunk before the stream is complete');
      if (done) this.finishStream(rank, sid, s);
      return;
    }
    throw new ProtocolError('bad_request', `unexpected ${kind} on the data socket`);
  }

  private skipEmpty(s: InStream): void {
    while (s.cur < s.descs.length && s.descs[s.cur].n === 0) s.cur++;
    if (s.cur < s.descs.length) s.next = s.offsets[s.cur];
  }

  private finishStream(rank: RankState, sid: number, s: InStream): void {
    rank.inStreams.delete(sid);
    const p = this.takePending(s.header.re as number);
    if (!p) return;
    const frames = s.descs.map((d, i) => s.buf.subarray(s.offsets[i], s.offsets[i] + d.n));
    try {
      p.resolve({ args: (s.header.a as Record<string, unknown>) ?? {}, ...decodePayloads(s.descs, frames) });
    } catch (e) {
      p.reject(asSidecarError(e, `reply to ${p.op}`));
    }
  }

  // ---------------------------------------------------------------- send

  private replyError(rid: Buffer, re: number | undefined, code: WireErrorCode, msg: string): void {
    const h: Record<string, unknown> = { err: { code, msg, retryable: false } };
    if (re !== undefined) h.re = re;
    void this.ctrlQ.send([rid, encodeHeaderFrame('err', h)]).catch(() => undefined);
  }

  private heartbeat(): void {
    const now = Date.now();
    // A tick this late means this process stood still (a blocked event loop, a busy machine): the ranks'
    // messages of that time wait unread in the sockets, read before the next tick. No verdict until then.
    const stalled = now - this.lastTick > this.deadMs / 2;
    this.lastTick = now;
    for (const r of this.ranks.values()) {
      if (!r.info.alive) continue;
      if (!stalled && now - r.lastSeen > this.deadMs) {
        this.markDead(r, `no message for ${now - r.lastSeen} ms (heartbeat lost)`);
        continue;
      }
      void this.ctrlQ
        .send([r.rid, encodeHeaderFrame('hb', { state: 'ok', busy: this.pending.size })])
        .catch(() => undefined);
      for (const [sid, s] of r.inStreams) {
        if (!stalled && now - s.lastActivity > this.limits.stallMs) {
          r.inStreams.delete(sid);
          this.rejectPending(
            s.header.re as number,
            SidecarError.generate('bad_request', `chunk stream ${sid} stalled`),
          );
        }
      }
    }
  }

  /** Marks every live rank lost (their launcher exited). */
  markAllDead(reason: string): void {
    for (const r of [...this.ranks.values()]) this.markDead(r, reason);
  }

  /**
   * Sends `op` to ranks 0..world-1 (args and payloads per rank), in rank order, after every earlier
   * world call has settled: collectives reach every rank in one order. Rejects with the first
   * failure (in rank order); resolves with the replies in rank order.
   */
  callWorld(
    op: string,
    args: Array<Record<string, unknown>>,
    payloads: Payloads[],
    opts: Omit<CallOptions, 'rank'> = {},
  ): Promise<CallResult[]> {
    if (args.length !== this.world)
      return Promise.reject(
        SidecarError.generate('bad_request', `${op}: ${args.length} argument sets for a world of ${this.world}`),
      );
    const run = async () => {
      const calls = args.map((a, r) => this.call(op, a, payloads[r] ?? {}, { ...opts, rank: r }));
      const settled = await Promise.allSettled(calls);
      const bad = settled
        .filter((s): s is PromiseRejectedResult => s.status === 'rejected')
        .map((s) => s.reason as Error);
      // A lost rank is the cause; the survivors' errors (a broken collective) are its consequence.
      if (bad.length) throw bad.find((e) => e instanceof SidecarError && e.code === 'rank_lost') ?? bad[0];
      return settled.map((s) => (s as PromiseFulfilledResult<CallResult>).value);
    };
    const p = this.worldTail.then(run);
    this.worldTail = p.catch(() => undefined);
    return p;
  }

  private worldTail: Promise<unknown> = Promise.resolve();

  /** Marks a rank lost: its pending calls reject with `rank_lost` at once. */
  markDead(rank: RankState | number, reason: string): void {
    const r = typeof rank === 'number' ? this.rankByNumber(rank) : rank;
    if (!r || !r.info.alive) return;
    r.info.alive = false;
    r.inStreams.clear();
    for (const w of r.creditWaiters)
      w.reject(SidecarError.generate('rank_lost', `rank ${r.info.rank} lost: ${reason}`, true));
    r.creditWaiters = [];
    for (const p of [...this.pending.values()]) {
      if (p.rank === r) {
        this.takePending(p.id);
        this.settledLocally.add(p.id);
        p.reject(SidecarError.generate('rank_lost', `${p.op}: rank ${r.info.rank} lost: ${reason}`, true));
      }
    }
    for (const l of this.listeners) l({ type: 'rank_lost', rank: r.info.rank, reason });
  }

  private takePending(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (!p) {
      if (this.settledLocally.delete(id)) this.stats.lateReplies++;
      else this.stats.badFrames++;
      return undefined;
    }
    this.pending.delete(id);
    p.cleanup();
    return p;
  }

  private rejectPending(id: number, e: Error): void {
    this.takePending(id)?.reject(e);
  }

  /** Stops a pending call locally (it rejects now) and asks the rank to stop working on it. */
  private cancel(id: number, code: 'cancelled' | 'deadline', why: string): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.takePending(id);
    this.settledLocally.add(id);
    p.reject(SidecarError.generate(code, `${p.op}: ${why}`));
    if (p.rank.info.alive) {
      void this.ctrlQ.send([p.rank.rid, encodeHeaderFrame('cancel', { re: id })]).catch(() => undefined);
    }
  }

  call(
    op: string,
    args: Record<string, unknown> = {},
    payloads: Payloads = {},
    opts: CallOptions = {},
  ): Promise<CallResult> {
    if (this.closed) return Promise.reject(SidecarError.generate('rank_lost', `${op}: sidecar is closed`));
    const rank = this.rankByNumber(opts.rank ?? 0);
    if (!rank)
      return Promise.reject(SidecarError.generate('rank_lost', `${op}: rank ${opts.rank ?? 0} is not connected`, true));
    if (opts.signal?.aborted)
      return Promise.reject(SidecarError.generate('cancelled', `${op}: aborted before sending`));
    let bufs: OutgoingBuffer[];
    try {
      bufs = describePayloads(payloads);
      checkDescriptors(
        bufs.map((b) => b.desc),
        this.limits,
      );
    } catch (e) {
      return Promise.reject(asSidecarError(e, op));
    }
    const id = this.nextId++;
    const header: Record<string, unknown> = { id, op, a: args };
    if (bufs.length) header.b = bufs.map((b) => b.desc);
    if (opts.deadlineMs !== undefined) header.dl = Math.max(0, Math.ceil(opts.deadlineMs));
    return new Promise<CallResult>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => this.cancel(id, 'cancelled', 'cancelled by the caller');
      const cleanup = () => {
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      this.pending.set(id, { id, op, rank, resolve, reject, onProgress: opts.onProgress, cleanup });
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      if (opts.deadlineMs !== undefined) {
        timer = setTimeout(() => this.cancel(id, 'deadline', `no reply within ${opts.deadlineMs} ms`), opts.deadlineMs);
      }
      const total = bufs.reduce((a, b) => a + b.bytes.byteLength, 0);
      const sent =
        total > this.limits.chunkBytes ? this.sendStreamed(rank, id, header, bufs) : this.sendPlain(rank, header, bufs);
      sent.catch((e) => {
        const p = this.pending.get(id);
        if (!p) return;
        this.takePending(id);
        p.reject(
          e instanceof SidecarError
            ? e
            : SidecarError.generate('rank_lost', `${op}: send failed: ${(e as Error).message}`, true),
        );
      });
    });
  }

  private async sendPlain(rank: RankState, header: Record<string, unknown>, bufs: OutgoingBuffer[]): Promise<void> {
    await this.ctrlQ.send([rank.rid, encodeHeaderFrame('req', header), ...bufs.map((b) => b.bytes)]);
  }

  private async sendStreamed(
    rank: RankState,
    id: number,
    header: Record<string, unknown>,
    bufs: OutgoingBuffer[],
  ): Promise<void> {
    const sid = this.nextSid++;
    const descs = bufs.map((b) => b.desc);
    const { offsets, total } = streamLayout(descs);
    this.stats.streamsOut++;
    await this.dataQ.send([rank.rid, encodeHeaderFrame('req', { ...header, st: { sid, tot: total } }, Flags.streamed)]);
    const chunk = this.limits.chunkBytes;
    const pieces: Array<{ off: number; bytes: Uint8Array }> = [];
    bufs.forEach((b, i) => {
      for (let o = 0; o < b.bytes.byteLength; o += chunk) {
        pieces.push({ off: offsets[i] + o, bytes: b.bytes.subarray(o, Math.min(o + chunk, b.bytes.byteLength)) });
      }
    });
    for (let seq = 0; seq < pieces.length; seq++) {
      if (!this.pending.has(id)) return; // cancelled or lost: stop streaming (the rank drops the partial stream)
      const piece = pieces[seq];
      while (rank.credit < piece.bytes.byteLength) {
        if (!rank.info.alive)
          throw SidecarError.generate('rank_lost', `rank ${rank.info.rank} lost while streaming`, true);
        await new Promise<void>((resolve, reject) => rank.creditWaiters.push({ resolve, reject }));
      }
      rank.credit -= piece.bytes.byteLength;
      const h: Record<string, unknown> = { sid, seq, off: piece.off };
      if (seq === pieces.length - 1) h.last = true;
      await this.dataQ.send([rank.rid, encodeHeaderFrame('chunk', h), piece.bytes]);
    }
  }

  /** Test hook: raw frames to a rank on either socket (fuzzing the rank's decoder). */
  async _sendRaw(rank: number, frames: Uint8Array[], socket: 'ctrl' | 'data' = 'ctrl'): Promise<void> {
    const r = this.rankByNumber(rank);
    if (!r) throw SidecarError.generate('rank_lost', `rank ${rank} is not connected`);
    await (socket === 'ctrl' ? this.ctrlQ : this.dataQ).send([r.rid, ...frames]);
  }

  /** Tells every rank to leave and closes both sockets (linger 0: never blocks process exit). */
  async close(reason = 'controller closing'): Promise<void> {
    if (this.closed) return;
    for (const r of this.ranks.values()) {
      if (r.info.alive) await this.ctrlQ.send([r.rid, encodeHeaderFrame('bye', { reason })]).catch(() => undefined);
    }
    this.closed = true;
    if (this.hbTimer) clearInterval(this.hbTimer);
    for (const r of this.ranks.values()) this.markDead(r, reason);
    // A short linger lets the queued byes leave; it is bounded, so exit can never hang on it.
    this.ctrl.linger = 200;
    this.ctrl.close();
    this.data.close();
    this.zap?.close();
  }

  get isClosed(): boolean {
    return this.closed;
  }
}

function asSidecarError(e: unknown, what: string): SidecarError {
  if (e instanceof SidecarError) return e;
  if (e instanceof ProtocolError)
    return SidecarError.generate(e.wireCode, `${what}: ${e.message}`, false, {}, { cause: e });
  return SidecarError.generate('internal', `${what}: ${(e as Error)?.message ?? String(e)}`, false, {}, { cause: e });
}
