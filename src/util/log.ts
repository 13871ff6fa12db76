/**
 * Where the SDK's messages go: every notice, warning and error line the SDK prints, and every line the
 * sidecar writes to its stderr, goes through one `Logger` (the same shape as openai-node's `logger`
 * client option), filtered by one `LogLevel`. An embedding tool passes its own logger to route them,
 * or `logLevel: 'off'` to silence them; the default writes to stderr (never stdout: a command's
 * stdout is its output, e.g. `pairuni plan --json`).
 */
import { format } from 'node:util';
import { ConfigError } from '../errors.js';

/** One level's method: a message, then values formatted after it as `console.error` would. */
export type LogFn = (message: string, ...args: unknown[]) => void;

/** Anything with these four methods: `console`, pino, winston, or a test's array. */
export interface Logger {
  /** What only a developer reads: the sidecar's unmarked lines (Python warnings, tracebacks), start and stop. */
  debug: LogFn;
  /** The normal life of a run worth a line (removed temporaries, a world back at full size). */
  info: LogFn;
  /** What the user may have to act on (a skipped checkpoint, a restarted sidecar). */
  warn: LogFn;
  /** A fault of the SDK or the sidecar itself (a checkpoint that could not be saved). */
  error: LogFn;
}

/**
 * How much reaches the logger: a message at this level or a more severe one. `'off'` passes nothing.
 * What arrives at each level is listed in docs/embedding.md ("Logging").
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'off';

/** The levels from the most verbose to `'off'`. */
export const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error', 'off'];

/** The `logger` / `logLevel` pair every SDK entry point that prints takes. */
export interface LogOptions {
  /** Receives the messages (default: `stderrLogger`). */
  logger?: Logger;
  /** The least severe level passed on (default: `$PAIRUNI_LOG`, else `'info'`). */
  logLevel?: LogLevel;
}

/** The default logger: every level to stderr, one line per message, formatted as `console.error` does. */
export const stderrLogger: Logger = {
  debug: (m, ...a) => void process.stderr.write(`${format(m, ...a)}\n`),
  info: (m, ...a) => void process.stderr.write(`${format(m, ...a)}\n`),
  warn: (m, ...a) => void process.stderr.write(`${format(m, ...a)}\n`),
  error: (m, ...a) => void process.stderr.write(`${format(m, ...a)}\n`),
};

/** Checks a level given as text (an option from plain JS, `$PAIRUNI_LOG`); `source` names it in the error. */
export function parseLogLevel(value: unknown, source = 'logLevel'): LogLevel {
  if (typeof value === 'string' && (LOG_LEVELS as readonly string[]).includes(value)) return value as LogLevel;
  throw new ConfigError(
    `${source} must be one of ${LOG_LEVELS.map((l) => `'${l}'`).join(', ')}, got ${JSON.stringify(value)}`,
  );
}

/** The level used where none is given: `$PAIRUNI_LOG` when set, else `'info'`. */
export function defaultLogLevel(): LogLevel {
  const env = process.env.PAIRUNI_LOG;
  return env ? parseLogLevel(env, 'PAIRUNI_LOG') : 'info';
}

/** The level `opts` asks for: `opts.logLevel` (checked), else `defaultLogLevel()`. */
export function logLevelOf(opts: LogOptions = {}): LogLevel {
  return opts.logLevel === undefined ? defaultLogLevel() : parseLogLevel(opts.logLevel);
}

const noop: LogFn = () => undefined;

/**
 * The logger the SDK writes to: `opts.logger` (default `stderrLogger`) with the methods below
 * `opts.logLevel` (default `defaultLogLevel()`) replaced by no-ops. Throws ConfigError for a level
 * that is not one of LOG_LEVELS, or a logger that lacks one of the four methods.
 */
export function createLogger(opts: LogOptions = {}): Logger {
  const logger = opts.logger ?? stderrLogger;
  for (const m of ['debug', 'info', 'warn', 'error'] as const) {
    if (typeof logger[m] !== 'function')
      throw new ConfigError(`logger must have debug, info, warn and error methods; its ${m} is ${typeof logger[m]}`);
  }
  const min = LOG_LEVELS.indexOf(logLevelOf(opts));
  // Called as methods of the user's logger, so a class-based one (console, pino) keeps its `this`.
  const at = (m: Exclude<LogLevel, 'off'>): LogFn =>
    LOG_LEVELS.indexOf(m) >= min ? (msg, ...a) => logger[m](msg, ...a) : noop;
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/**
 * The level of one line of the sidecar's stderr. Lines the sidecar writes through its log helper
 * (python_sidecar/pairuni_sidecar/log.py) carry theirs after the header: `[pairuni-sidecar PID T] warn: ...`.
 * Any other line (Python warnings, library logging, tracebacks, torchrun) is `debug`: a failure reaches
 * the caller as a typed error that carries the last lines (`SidecarStartError.stderrTail`), and a
 * traceback printed before it would only repeat it.
 */
export function sidecarLineLevel(line: string): Exclude<LogLevel, 'off'> {
  const m = /\[pairuni-sidecar [^\]]*\] (debug|info|warn|error): /.exec(line);
  return m ? (m[1] as Exclude<LogLevel, 'off'>) : 'debug';
}
