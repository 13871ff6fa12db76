/**
 * The `loggers` W&B and MLflow: one child process, `python -m pairuni_sidecar.sinks`, on the
 * controller's host (not in the model sidecar, whose ranks may be elsewhere), fed one JSON command per
 * line on stdin, answering one JSON line each on stdout, so a tracker's failure comes back as a
 * `SinkError` naming it. The interpreter is the sidecar's (`sidecar.python`, else the package venv).
 *
 * `<out>/loggers.json` keeps each tracker's run id and the last step each key reached it at: a
 * resumed run continues the same runs, and a step is sent once even when the run redoes it (a restart
 * from an earlier checkpoint) — W&B refuses steps that go back, MLflow would keep both values. What a
 * tracker missed (it failed, the child or the controller died) is sent from metrics.jsonl and
 * eval.jsonl on the next start. MLflow's file store has a value once it acknowledges it; W&B holds
 * what it is given in its own service process until the run finishes (a killed child loses it,
 * measured with wandb 0.31 offline), so W&B's steps count as kept only after a clean close.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SinkError } from '../errors.js';
import { pythonEnv, resolvePython } from '../sidecar/python.js';
import { writeJsonAtomic } from '../util/atomic.js';
import type { LoggerConfig } from './config.js';
import { readEvals, readMetrics } from './metrics.js';
import type { ExperimentSink } from './sinks.js';

/** The `loggers` entries the child process serves. */
export type TrackerLogger = Extract<LoggerConfig, { type: 'wandb' | 'mlflow' }>;

/** Whether a `loggers` entry is one the child process serves (W&B, MLflow). */
export const isTrackerLogger = (l: LoggerConfig | string): l is TrackerLogger =>
  typeof l !== 'string' && (l.type === 'wandb' || l.type === 'mlflow');

/** The run directory's record of the trackers' runs (`<out>/loggers.json`). */
export const LOGGER_STATE_FILE = 'loggers.json';

/** What `<out>/loggers.json` holds. */
export interface LoggerState {
  /** Each tracker's run: W&B's run id, MLflow's run id. */
  runs: { wandb?: { id: string }; mlflow?: { runId: string } };
  /** Per tracker, the last step each scalar (`table:NAME`, `image:TAG` for tables and images) is kept at. */
  last: { wandb?: Record<string, number>; mlflow?: Record<string, number> };
}

/** Options of {@link PythonSinks}. */
export interface PythonSinksOptions {
  /** The interpreter (default: `resolvePython()`: $PAIRUNI_PYTHON, else the package venv). */
  python?: string;
  /** Each line the child writes to stderr (its warnings carry the sidecar's `[pairuni-sidecar ...] warn:` header). */
  onLine?: (line: string) => void;
  /** A step left out because the trackers have it (once per start: a run redoing steps after a restart). */
  onNotice?: (text: string) => void;
}

const STDERR_TAIL = 4000;

// Python's json reads NaN and ±Infinity, which JSON.stringify would turn into null.
const toJsonLine = (msg: unknown) =>
  JSON.stringify(msg, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? `\u0000${v}` : v)).replace(
    /"\\u0000(NaN|Infinity|-Infinity)"/g,
    '$1',
  ) + '\n';

type Reply = { ok: true; runs?: LoggerState['runs'] } | { ok: false; sink: string; what: string; error: string };

/** W&B and MLflow runs behind the {@link ExperimentSink} interface, through one Python child process. */
export class PythonSinks implements ExperimentSink {
  private child?: ChildProcess;
  private pending: Array<{ what: string; resolve: (r: Reply) => void; reject: (e: Error) => void }> = [];
  private ended?: string;
  private stderrTail = '';
  private out = '';
  private state: LoggerState = { runs: {}, last: {} };
  /** Per tracker, the last step each key was sent at by this process. */
  private sent: Record<string, Record<string, number>> = {};
  private skipped = false;
  private quiet = false;

  constructor(
    private readonly trackers: readonly TrackerLogger[],
    private readonly opts: PythonSinksOptions = {},
  ) {}

  /** Starts the child and its trackers' runs (continuing those in loggers.json on a resume), then sends what they missed up to `step`. */
  async start(run: Parameters<NonNullable<ExperimentSink['start']>>[0]): Promise<void> {
    this.skipped = false;
    if (!this.child) {
      this.out = run.out;
      const file = join(run.out, LOGGER_STATE_FILE);
      this.state = run.resumed && existsSync(file) ? readState(file) : { runs: {}, last: {} };
      this.sent = Object.fromEntries(this.trackers.map((t) => [t.type, { ...this.state.last[t.type] }]));
      this.spawnChild();
      const sinks = this.trackers.map((t) =>
        t.type === 'wandb'
          ? { ...t, ...(this.state.runs.wandb ? { id: this.state.runs.wandb.id } : {}) }
          : { ...t, ...(this.state.runs.mlflow ? { runId: this.state.runs.mlflow.runId } : {}) },
      );
      const reply = await this.send({ cmd: 'start', sinks, config: run.config }, 'start');
      this.state.runs = (reply as { runs: LoggerState['runs'] }).runs;
      this.save();
    }
    // The run directory's record up to `step`, in the order it was logged (an evaluation after the step's
    // metrics): whatever a tracker already has is left out.
    const rows = [
      ...readMetrics(run.out).map(({ step, ...s }) => ({
        step,
        at: 0,
        scalars: s as unknown as Record<string, number>,
      })),
      ...readEvals(run.out).map(({ step, ...s }) => ({ step, at: 1, scalars: s as Record<string, number> })),
    ]
      .filter((r) => r.step <= run.step)
      .sort((a, b) => a.step - b.step || a.at - b.at);
    this.quiet = true;
    try {
      for (const r of rows) await this.log(r.step, r.scalars);
    } finally {
      this.quiet = false;
    }
  }

  /** A step's scalars; those a tracker got at this step or a later one are left out for it. */
  async log(step: number, scalars: Readonly<Record<string, number>>): Promise<void> {
    for (const t of this.trackers) {
      const fresh = Object.fromEntries(Object.entries(scalars).filter(([k]) => this.due(t.type, k, step)));
      if (!Object.keys(fresh).length) continue;
      await this.send({ cmd: 'log', to: t.type, step, scalars: fresh }, 'log');
      this.done(t.type, Object.keys(fresh), step);
    }
  }

  /** An evaluation's sample table (W&B: a `wandb.Table`; MLflow: the artifact `NAME/step-NNNNNN.json`). */
  async logTable(step: number, name: string, rows: ReadonlyArray<Readonly<Record<string, unknown>>>): Promise<void> {
    for (const t of this.trackers) {
      if (!this.due(t.type, `table:${name}`, step)) continue;
      await this.send({ cmd: 'table', to: t.type, step, name, rows }, 'table');
      this.done(t.type, [`table:${name}`], step);
    }
  }

  /** A PNG (W&B: a `wandb.Image`; MLflow: the artifact `TAG/<file name>`). */
  async logImage(step: number, tag: string, path: string): Promise<void> {
    for (const t of this.trackers) {
      if (!this.due(t.type, `image:${tag}`, step)) continue;
      await this.send({ cmd: 'image', to: t.type, step, tag, path }, 'image');
      this.done(t.type, [`image:${tag}`], step);
    }
  }

  /** Finishes the trackers' runs and waits for the child to exit; nothing to do after it died (that failure was reported). */
  async close(): Promise<void> {
    const child = this.child;
    if (!child || this.ended) return;
    const exited = new Promise<void>((res) => child.once('exit', () => res()));
    await this.send({ cmd: 'close' }, 'close');
    child.stdin?.end();
    await exited;
    // every run is finished: what W&B was sent is in its files now
    for (const t of this.trackers) this.state.last[t.type] = { ...this.sent[t.type] };
    this.save();
  }

  private due(tracker: TrackerLogger['type'], key: string, step: number): boolean {
    const last = this.sent[tracker][key];
    if (last === undefined || step > last) return true;
    if (!this.skipped && !this.quiet) {
      this.skipped = true;
      this.opts.onNotice?.(`${tracker} has ${key} up to step ${last}; step ${step} is not sent again`);
    }
    return false;
  }

  private done(tracker: TrackerLogger['type'], keys: readonly string[], step: number): void {
    for (const k of keys) this.sent[tracker][k] = step;
    if (tracker !== 'mlflow') return; // see the module's comment: W&B's count only after a clean close
    this.state.last.mlflow = { ...this.sent.mlflow };
    this.save();
  }

  private save(): void {
    writeJsonAtomic(join(this.out, LOGGER_STATE_FILE), this.state);
  }

  private spawnChild(): void {
    const python = resolvePython(this.opts.python);
    // detached: a terminal's Ctrl-C reaches only the controller, which then finishes the runs itself.
    // When the controller dies, the child reads the end of stdin and finishes them too.
    const child = spawn(python, ['-m', 'pairuni_sidecar.sinks'], {
      cwd: this.out,
      env: pythonEnv(),
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    this.child = child;
    let out = '';
    child.stdout!.on('data', (buf: Buffer) => {
      const lines = (out + buf.toString('utf8')).split('\n');
      out = lines.pop() ?? '';
      for (const line of lines) {
        const p = this.pending.shift();
        if (!p) continue;
        try {
          p.resolve(JSON.parse(line) as Reply);
        } catch {
          p.reject(
            new SinkError(
              `the tracker process sent a line that is not a reply: ${line.slice(0, 200)}`,
              'sinks',
              p.what,
            ),
          );
        }
      }
    });
    let err = '';
    child.stderr!.on('data', (buf: Buffer) => {
      const lines = (err + buf.toString('utf8')).split('\n');
      err = lines.pop() ?? '';
      for (const line of lines) {
        this.stderrTail = (this.stderrTail + line + '\n').slice(-STDERR_TAIL);
        this.opts.onLine?.(line);
      }
    });
    // a broken pipe to a dead child is reported by its exit below, not as an unhandled stream error
    child.stdin!.on('error', () => undefined);
    const fail = (why: string) => {
      this.ended = why;
      for (const p of this.pending.splice(0)) p.reject(this.deadError(p.what));
    };
    child.on('error', (e) => fail(`could not start ${python} -m pairuni_sidecar.sinks: ${e.message}`));
    child.on('exit', (code, signal) => {
      if (err) this.opts.onLine?.(err);
      fail(
        `the tracker process (${python} -m pairuni_sidecar.sinks) exited (${signal ? `signal ${signal}` : `code ${code}`})`,
      );
    });
  }

  private deadError(what: string): SinkError {
    const tail = this.stderrTail.trim();
    return new SinkError(`${this.ended} during '${what}'${tail ? `; its last lines:\n${tail}` : ''}`, 'sinks', what);
  }

  private async send(msg: { cmd: string } & Record<string, unknown>, what: string): Promise<Reply> {
    if (this.ended || !this.child) throw this.deadError(what);
    const reply = await new Promise<Reply>((resolve, reject) => {
      this.pending.push({ what, resolve, reject });
      this.child!.stdin!.write(toJsonLine(msg));
    });
    if (!reply.ok) throw new SinkError(`${reply.sink} failed to ${reply.what}: ${reply.error}`, reply.sink, reply.what);
    return reply;
  }
}

function readState(file: string): LoggerState {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as LoggerState;
  } catch (e) {
    throw new SinkError(`cannot read the trackers' runs from ${file}: ${(e as Error).message}`, 'sinks', 'start', {
      cause: e,
    });
  }
}
