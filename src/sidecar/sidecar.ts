/**
 * `Sidecar`: the SDK's handle on one or more PyTorch sidecar ranks.
 *
 *   const sc = await Sidecar.spawn();                  // local process over ipc:// in a 0700 dir
 *   const sc = await Sidecar.spawn({ ranks: 2 });       // torchrun starts 2 ranks here (gloo on CPU, FSDP2)
 *   const sc = await Sidecar.attach({ endpoint: 'tcp://0.0.0.0:5555', world: 8 }); // torchrun ranks connect in
 *   const { args } = await sc.train.load({ model, optim, seed: 0 });  // typed ops (src/contract/ops.ts)
 *   const { args, tensors, tables } = await sc.call('my.op', {}, { x: Tensor.from(f32) }); // users' own ops
 *   await sc.close();
 *
 * With several ranks, the catalogue's world-scoped ops (`scope: 'world'` in src/contract/ops.ts: load,
 * rollouts, update, save, ...) go to every rank, in one order: `sc.train.load(args)` sends the same
 * args to each, `sc.all('train.update', perRankArgs, perRankPayloads)` each rank its own. Per-rank
 * ops go to one rank (`{ rank }`, default 0).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AbortedError, BadRequestError, RanksMissingError, SidecarError, SidecarStartError } from '../errors.js';
import type { Limits } from '../protocol/constants.js';
import type { Payloads } from '../protocol/payload.js';
import type { OpReply } from '../contract/ops.js';
import { invoke, invokeWorld, isWorldOp, makeClient, type OpClient, type OpResult } from './client.js';
import type { OpArgs, OpName } from '../contract/ops.js';
import {
  type CallOptions,
  type CallResult,
  Controller,
  type ControllerOptions,
  type ControllerStats,
  type RankInfo,
} from './controller.js';
import type { CurveOptions } from './curve.js';
import { pythonEnv, resolvePython } from './python.js';
import { createLogger, type LogOptions, sidecarLineLevel } from '../util/log.js';

/** Options of {@link Sidecar.spawn}: the local sidecar process, its ranks and its environment. */
export interface SpawnOptions extends LogOptions {
  /** Python interpreter (default: $PAIRUNI_PYTHON, else <package>/.venv/bin/python). */
  python?: string;
  /** Extra environment variables of the sidecar, over this process's. */
  env?: Record<string, string>;
  /** Working directory of the sidecar (default: this process's, so relative paths mean the same on both sides). */
  cwd?: string;
  /**
   * Python modules of plug-ins (ops, rewards, adapters, backbones, tiny-model builders): each declares
   * `PLUGINS = {kind: {name: "module:attr"}}` or registers with the decorators (`--plugins`).
   */
  plugins?: string[];
  /** torch intra-op threads in the sidecar. */
  threads?: number;
  /** How long every rank has to say hello (default 120 000 ms; the first run may compile kernels). */
  startTimeoutMs?: number;
  /** Heartbeat interval (default 500 ms). */
  hbMs?: number;
  /** A rank silent this long is declared lost and its calls fail with RankLostError (default 4000 ms). */
  deadMs?: number;
  /** Transfer limits (defaults: `DEFAULT_LIMITS` of `pairuni/protocol`). */
  limits?: Partial<Limits>;
  /**
   * Receives each line the sidecar writes to stderr or stdout, as text. Given without `logger`, it
   * takes the lines instead of the logger (the behaviour before `logger` existed); with `logger`, both
   * receive them. Either way the last lines are kept for error messages (`logTail`).
   */
  onLog?: (line: string) => void;
  /**
   * Ranks to start on this host (default 1). More than one: torchrun (`python -m torch.distributed.run
   * --standalone --nproc-per-node N`) starts them, they form a torch.distributed world (gloo on CPU,
   * `cuda:nccl,cpu:gloo` on GPU) and shard the policy with FSDP2.
   */
  ranks?: number;
  /** torchrun `--max-restarts` (ranks > 1): how often it restarts the whole world after a rank dies. */
  maxRestarts?: number;
  /** Aborting it while the sidecar starts stops the start: the process is killed and spawn rejects with AbortedError. */
  signal?: AbortSignal;
}

/** Options of {@link Sidecar.attach}: a controller that binds and waits for ranks started elsewhere (multi-host). */
export interface AttachOptions extends LogOptions {
  /** Endpoint to bind for the ctrl socket, e.g. tcp://0.0.0.0:5555; data binds on port+1 unless given. */
  endpoint: string;
  /**
   * tcp:// needs CURVE: this controller's key pair (`pairuni keys controller`: controller.key) and the
   * public keys (or .pub files) of the ranks allowed in; others are refused and logged.
   */
  curve?: CurveOptions;
  /** Accept plaintext tcp:// ranks instead (a trusted private network only). */
  plaintext?: boolean;
  /** Called for each CURVE handshake, allowed or refused (default: refusals are logged to stderr). */
  onAuth?: ControllerOptions['onAuth'];
  /** Endpoint of the data socket (chunk streams), when not the ctrl port + 1. */
  dataEndpoint?: string;
  /** How many ranks must register before attach resolves. */
  world?: number;
  /** How long to wait for them (default 300 000 ms). */
  timeoutMs?: number;
  /** Heartbeat interval (default 500 ms). */
  hbMs?: number;
  /** A rank silent this long is declared lost (default 4000 ms). */
  deadMs?: number;
  /** Transfer limits (defaults: `DEFAULT_LIMITS` of `pairuni/protocol`). */
  limits?: Partial<Limits>;
}

/** What the `info` op reports: versions, devices, plug-ins (and the ones that failed to import), the loaded policy. */
export type SidecarInfo = OpReply<'info'>;

const STDERR_TAIL = 8192;

// The typed op methods (`sc.train.load`, `sc.features.embed`, ...) are merged onto every Sidecar.
export interface Sidecar extends Omit<OpClient, 'info'> {}

/**
 * A running sidecar: one or more Python ranks behind a controller. Start one with {@link Sidecar.spawn}
 * (a local process) or {@link Sidecar.attach} (ranks that connect in); call ops as typed methods
 * (`sc.train.load(...)`, one per catalogued op, see docs/ops.md) or by name with `call`; `close()` when done.
 */
export class Sidecar {
  private child?: ChildProcess;
  private ipcDir?: string;
  private stderrTail = '';
  private exitInfo?: { code: number | null; signal: NodeJS.Signals | null };
  private readonly exitHooks: Array<() => void> = [];

  private constructor(private readonly ctl: Controller) {
    const { info: _info, ...ops } = makeClient((op, args, payloads, opts) => this.route(op, args, payloads, opts));
    Object.assign(this, ops);
  }

  /** A typed op method's call: world-scoped ops go to every rank (same args), the reply is rank 0's. */
  private async route(
    op: string,
    args: Record<string, unknown>,
    payloads: Payloads,
    opts?: CallOptions,
  ): Promise<CallResult> {
    if (this.ctl.world === 1 || !isWorldOp(op)) return this.ctl.call(op, args, payloads, opts);
    if (opts?.rank !== undefined)
      throw new BadRequestError(
        `${op} is world-scoped (a collective): it goes to every rank, not to rank ${opts.rank}`,
        false,
        { side: 'client' },
      );
    const world = this.ctl.world;
    return (await this.ctl.callWorld(op, Array(world).fill(args), Array(world).fill(payloads), opts))[0];
  }

  /**
   * A world-scoped op on every rank, each with its own args and payloads (`args(rank)`), replies in
   * rank order. Refuses per-rank ops (they would leave the other ranks out of a collective).
   */
  all<N extends OpName>(
    op: N,
    args: (rank: number) => OpArgs<N>,
    payloads?: (rank: number) => Payloads,
    opts?: Omit<CallOptions, 'rank'>,
  ): Promise<Array<OpResult<N>>> {
    const ranks = Array.from({ length: this.ctl.world }, (_, r) => r);
    return invokeWorld(
      (o, a, p, c) => this.ctl.callWorld(o, a, p, c),
      op,
      ranks.map(args),
      ranks.map((r) => payloads?.(r) ?? {}),
      opts,
    );
  }

  /**
   * After a rank of the world of restart `after` (`sc.epoch` before the loss) was lost: waits for every
   * rank of a later restart (torchrun restarts the whole world, `--max-restarts`); the new ranks hold
   * no policy (load it again). Throws a
   * RanksMissingError naming the ranks that did not come back, or SidecarStartError once torchrun gave up.
   */
  async rejoin(after: number, timeoutMs = 300_000): Promise<void> {
    // Ranks of a later torchrun restart (TORCHELASTIC_RESTART_COUNT in their hello) than the lost
    // world's: a rank of the new world may have said hello before the loss was even noticed.
    await this.ctl.waitForRanks(
      this.ctl.world,
      timeoutMs,
      () =>
        this.exitInfo
          ? new SidecarStartError(
              `the rank launcher exited (${this.exitInfo.signal ?? `code ${this.exitInfo.code}`}): no restart left`,
              this.stderrTail,
            )
          : undefined,
      (r) => Number(r.extra.restart ?? 0) > after,
    );
  }

  /** The torchrun restart count of the current world (the lowest among the live ranks; 0 without torchrun). */
  get epoch(): number {
    const live = this.ctl.rankInfos().filter((r) => r.alive);
    return live.length ? Math.min(...live.map((r) => Number(r.extra.restart ?? 0))) : 0;
  }

  /** How many ranks this sidecar has (its torch.distributed world size). */
  get world(): number {
    return this.ctl.world;
  }

  /** Starts a local sidecar process and resolves once it has said hello. */
  static async spawn(opts: SpawnOptions = {}): Promise<Sidecar> {
    const ranks = opts.ranks ?? 1;
    if (!Number.isInteger(ranks) || ranks < 1)
      throw new BadRequestError(`spawn: ranks must be an integer >= 1, got ${ranks}`, false, {
        field: 'ranks',
        side: 'client',
      });
    const log = createLogger(opts);
    // Lines go to the logger at the level the sidecar gave them (src/util/log.ts: sidecarLineLevel).
    const toLogger = opts.onLog && !opts.logger ? undefined : (line: string) => log[sidecarLineLevel(line)](line);
    // mkdtemp creates the directory 0700: only this user can reach the sockets.
    const dir = mkdtempSync(join(tmpdir(), 'pairuni-'));
    chmodSync(dir, 0o700);
    const ctl = new Controller({
      ctrlEndpoint: `ipc://${join(dir, 'ctrl')}`,
      dataEndpoint: `ipc://${join(dir, 'data')}`,
      hbMs: opts.hbMs,
      deadMs: opts.deadMs,
      limits: opts.limits,
      logger: log,
    });
    const sc = new Sidecar(ctl);
    sc.ipcDir = dir;
    try {
      await ctl.start();
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw new SidecarStartError(`could not bind ipc sockets in ${dir}: ${(e as Error).message}`, '', { cause: e });
    }
    const python = resolvePython(opts.python);
    // More than one rank: torchrun starts them (a free rendezvous port each time: --standalone) and
    // restarts the whole world after a rank dies, up to --max-restarts times.
    const launcher =
      ranks > 1
        ? [
            '-m',
            'torch.distributed.run',
            '--standalone',
            `--nproc-per-node=${ranks}`,
            `--max-restarts=${opts.maxRestarts ?? 0}`,
          ]
        : [];
    const args = [
      ...launcher,
      '-m',
      'pairuni_sidecar',
      '--connect',
      `ipc://${join(dir, 'ctrl')}`,
      '--data',
      `ipc://${join(dir, 'data')}`,
      '--parent-pid',
      String(process.pid),
      '--wait-controller',
      '60',
    ];
    for (const m of opts.plugins ?? []) args.push('--plugins', m);
    if (opts.threads) args.push('--threads', String(opts.threads));
    const env = pythonEnv(opts.env);
    // torchrun keeps its logs in a temp dir it never removes: make that our private dir (removed at close).
    if (ranks > 1) env.TMPDIR = dir;
    // torchrun (torch 2.13) hands every restart of the world the same rendezvous TCPStore, unprefixed:
    // the restarted ranks can read the dead world's gloo/NCCL addresses from it and then fail to connect
    // or wait forever (pytorch#135712; measured here: 5 of 6 restarts of a bare 2-rank gloo script
    // failed, 0 of 6 with this set). Unshared, each restart gets a fresh store on its rank 0.
    if (ranks > 1) env.TORCH_DISABLE_SHARE_RDZV_TCP_STORE ??= '1';
    let child: ChildProcess;
    try {
      // detached: a process group (and session) of its own, so a terminal's Ctrl-C, which goes to the
      // whole foreground group, reaches only this controller. The sidecar can ignore SIGINT only once
      // its imports are done (seconds); before that the signal would kill it mid-start, with a traceback.
      // The controller ends it (bye, SIGTERM, or SIGKILL from the exit hook below); so does the
      // sidecar's own --parent-pid watch when this process is SIGKILLed.
      child = spawn(python, args, {
        cwd: opts.cwd ?? process.cwd(),
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
    } catch (e) {
      await ctl.close();
      sc.cleanupDir();
      throw new SidecarStartError(`could not start ${python}: ${(e as Error).message}`);
    }
    sc.child = child;
    const onLine = (line: string) => {
      sc.stderrTail = (sc.stderrTail + line + '\n').slice(-STDERR_TAIL);
      opts.onLog?.(line);
      toLogger?.(line);
    };
    let partial = '';
    const onData = (buf: Buffer) => {
      const lines = (partial + buf.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      lines.forEach(onLine);
    };
    child.stderr?.on('data', onData);
    child.stdout?.on('data', onData);
    // Whatever ends this process while the sidecar runs (process.exit on a second Ctrl-C, an uncaught
    // error) ends the sidecar and removes the socket dir; no asynchronous cleanup runs after 'exit'.
    const onProcessExit = () => {
      child.kill('SIGKILL');
      sc.cleanupDir();
    };
    process.once('exit', onProcessExit);
    sc.exitHooks.push(() => process.removeListener('exit', onProcessExit));
    let spawnError: Error | undefined;
    child.on('error', (e) => {
      spawnError = e;
    });
    child.on('exit', (code, signal) => {
      if (partial) onLine(partial);
      sc.exitInfo = { code, signal };
      ctl.markAllDead(`sidecar process ${child.pid} exited (${signal ? `signal ${signal}` : `code ${code}`})`);
      sc.cleanupDir();
    });
    try {
      await ctl.waitForRanks(ranks, opts.startTimeoutMs ?? 120_000, () => {
        if (opts.signal?.aborted) return new AbortedError('stopped while the sidecar was starting');
        if (spawnError) return new SidecarStartError(`could not start ${python}: ${spawnError.message}`);
        if (sc.exitInfo) {
          return new SidecarStartError(
            `sidecar (${python}) exited before saying hello (${sc.exitInfo.signal ?? `code ${sc.exitInfo.code}`}). ` +
              `Run \`npx pairuni doctor\` to check the Python environment.`,
            sc.stderrTail,
          );
        }
        return undefined;
      });
    } catch (e) {
      // Reject only once the process is gone: the caller may exit right after (a Ctrl-C at start).
      const gone =
        sc.exitInfo || spawnError
          ? Promise.resolve()
          : new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGKILL');
      await gone;
      await ctl.close();
      sc.exitHooks.forEach((h) => h());
      sc.cleanupDir();
      if (e instanceof AbortedError) throw e;
      if (e instanceof RanksMissingError) throw new RanksMissingError(e.message, e.missing, e.world, sc.stderrTail);
      if (e instanceof SidecarStartError) throw e;
      throw new SidecarStartError(`sidecar did not say hello: ${(e as Error).message}`, sc.stderrTail);
    }
    child.unref();
    (child.stderr as unknown as { unref?: () => void })?.unref?.();
    (child.stdout as unknown as { unref?: () => void })?.unref?.();
    return sc;
  }

  /** Binds `endpoint` and waits for `world` ranks started elsewhere (`python -m pairuni_sidecar --connect ...`). */
  static async attach(opts: AttachOptions): Promise<Sidecar> {
    let data = opts.dataEndpoint;
    if (!data) {
      const m = /^tcp:\/\/(.+):(\d+)$/.exec(opts.endpoint);
      if (!m) throw new SidecarStartError(`cannot derive a data endpoint from ${opts.endpoint}; pass dataEndpoint`);
      data = `tcp://${m[1]}:${Number(m[2]) + 1}`;
    }
    const ctl = new Controller({
      ctrlEndpoint: opts.endpoint,
      dataEndpoint: data,
      hbMs: opts.hbMs,
      deadMs: opts.deadMs,
      limits: opts.limits,
      run: randomUUID(),
      curve: opts.curve,
      plaintext: opts.plaintext,
      onAuth: opts.onAuth,
      logger: createLogger(opts),
    });
    await ctl.start();
    try {
      await ctl.waitForRanks(opts.world ?? 1, opts.timeoutMs ?? 300_000);
    } catch (e) {
      await ctl.close();
      throw e;
    }
    return new Sidecar(ctl);
  }

  /** Versions, devices, plug-ins (and the ones that failed to import), the loaded policy. */
  async info(): Promise<SidecarInfo> {
    return (await invoke((op, args, payloads, opts) => this.ctl.call(op, args, payloads, opts), 'info', {})).args;
  }

  /** Calls an op by name with untyped args: for users' own ops (built-in ones have typed methods). */
  call(op: string, args?: Record<string, unknown>, payloads?: Payloads, opts?: CallOptions): Promise<CallResult> {
    return this.ctl.call(op, args, payloads, opts);
  }

  /** Every rank that registered, dead ones included (`alive: false`). */
  get ranks(): RankInfo[] {
    return this.ctl.rankInfos();
  }

  /** How the spawned process (the sidecar, or torchrun for several ranks) ended; undefined while it runs. */
  get exited(): { code: number | null; signal: NodeJS.Signals | null } | undefined {
    return this.exitInfo ? { ...this.exitInfo } : undefined;
  }

  /** Process id of a spawned sidecar; undefined for an attached one. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** A snapshot of the controller's counters (bytes, streams, bad frames, refused connections). */
  get stats(): ControllerStats {
    return { ...this.ctl.stats };
  }

  /** The last lines the sidecar wrote to stderr (for error reports). */
  get logTail(): string {
    return this.stderrTail;
  }

  /** True while the controller is open and at least one rank is alive. */
  get alive(): boolean {
    return this.ctl.rankInfos().some((r) => r.alive) && !this.ctl.isClosed;
  }

  /** Called with the rank number and reason whenever a rank is lost (process exit, heartbeat loss, bye). */
  onRankLost(fn: (rank: number, reason: string) => void): () => void {
    return this.ctl.onEvent((ev) => fn(ev.rank, ev.reason));
  }

  /** Graceful shutdown: bye to every rank, wait for a spawned process (then SIGTERM, SIGKILL), close sockets (torchrun: longer, ranks leave the process group first). */
  async close(timeoutMs = this.ctl.world > 1 ? 30_000 : 5000): Promise<void> {
    await this.ctl.close();
    const child = this.child;
    if (child && !this.exitInfo) {
      child.ref(); // keep the event loop alive until the process is really gone
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      const within = (ms: number) =>
        Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
      // bye first; then SIGTERM (the rank stops at its next loop turn); SIGKILL as the last resort.
      if (!(await within(timeoutMs / 2))) {
        child.kill('SIGTERM');
        if (!(await within(timeoutMs / 2))) {
          child.kill('SIGKILL');
          await exited;
        }
      }
    }
    this.exitHooks.forEach((h) => h());
    this.cleanupDir();
  }

  /**
   * Test hook: raw frames straight onto a rank's socket (fuzzing).
   *
   * @internal
   */
  get _controller(): Controller {
    return this.ctl;
  }

  private cleanupDir(): void {
    if (this.ipcDir) {
      rmSync(this.ipcDir, { recursive: true, force: true });
      this.ipcDir = undefined;
    }
  }
}

export { SidecarError };
