/**
 * src/util/log.ts: level filtering, 'off', $PAIRUNI_LOG, the default stderr logger, refusals, and the
 * level of a sidecar stderr line.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConfigError } from '../../../src/errors.js';
import {
  createLogger,
  defaultLogLevel,
  LOG_LEVELS,
  type Logger,
  type LogLevel,
  parseLogLevel,
  sidecarLineLevel,
  stderrLogger,
} from '../../../src/util/log.js';

/** A logger that records [level, message, ...args]. */
function capture(): { logger: Logger; got: unknown[][] } {
  const got: unknown[][] = [];
  const at =
    (level: string) =>
    (m: string, ...a: unknown[]) =>
      void got.push([level, m, ...a]);
  return { got, logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } };
}

const sayAll = (l: Logger) => {
  l.debug('d');
  l.info('i');
  l.warn('w', 1);
  l.error('e', { x: 2 });
};

afterEach(() => {
  vi.unstubAllEnvs();
  vi.restoreAllMocks();
});

describe('createLogger', () => {
  it.each([
    ['debug', ['debug', 'info', 'warn', 'error']],
    ['info', ['info', 'warn', 'error']],
    ['warn', ['warn', 'error']],
    ['error', ['error']],
    ['off', []],
  ] as Array<[LogLevel, string[]]>)('at %s passes %j', (logLevel, passed) => {
    const { logger, got } = capture();
    sayAll(createLogger({ logger, logLevel }));
    expect(got.map((g) => g[0])).toEqual(passed);
  });

  it('hands the message and the extra arguments through unchanged', () => {
    const { logger, got } = capture();
    sayAll(createLogger({ logger, logLevel: 'debug' }));
    expect(got).toEqual([
      ['debug', 'd'],
      ['info', 'i'],
      ['warn', 'w', 1],
      ['error', 'e', { x: 2 }],
    ]);
  });

  it("calls a class-based logger's methods on the logger itself (its `this` kept)", () => {
    class Collector {
      lines: string[] = [];
      debug(m: string) {
        this.lines.push(`D ${m}`);
      }
      info(m: string) {
        this.lines.push(`I ${m}`);
      }
      warn(m: string) {
        this.lines.push(`W ${m}`);
      }
      error(m: string) {
        this.lines.push(`E ${m}`);
      }
    }
    const c = new Collector();
    sayAll(createLogger({ logger: c, logLevel: 'warn' }));
    expect(c.lines).toEqual(['W w', 'E e']);
  });

  it("defaults to $PAIRUNI_LOG, else 'info'; an explicit logLevel wins", () => {
    vi.stubEnv('PAIRUNI_LOG', '');
    expect(defaultLogLevel()).toBe('info');
    let c = capture();
    sayAll(createLogger({ logger: c.logger }));
    expect(c.got.map((g) => g[0])).toEqual(['info', 'warn', 'error']);
    vi.stubEnv('PAIRUNI_LOG', 'error');
    c = capture();
    sayAll(createLogger({ logger: c.logger }));
    expect(c.got.map((g) => g[0])).toEqual(['error']);
    c = capture();
    sayAll(createLogger({ logger: c.logger, logLevel: 'debug' }));
    expect(c.got).toHaveLength(4);
  });

  it('refuses an unknown level, from the option or from $PAIRUNI_LOG, naming the source and the valid levels', () => {
    const { logger } = capture();
    expect(() => createLogger({ logger, logLevel: 'verbose' as LogLevel })).toThrow(ConfigError);
    expect(() => createLogger({ logger, logLevel: 'verbose' as LogLevel })).toThrow(
      "logLevel must be one of 'debug', 'info', 'warn', 'error', 'off', got \"verbose\"",
    );
    vi.stubEnv('PAIRUNI_LOG', 'WARN');
    expect(() => createLogger({ logger })).toThrow(/^PAIRUNI_LOG must be one of .* got "WARN"$/);
    expect(parseLogLevel('off')).toBe('off');
    expect(LOG_LEVELS).toEqual(['debug', 'info', 'warn', 'error', 'off']);
  });

  it('refuses a logger without the four methods, naming the missing one', () => {
    expect(() => createLogger({ logger: { debug() {}, info() {}, warn() {} } as unknown as Logger })).toThrow(
      new ConfigError('logger must have debug, info, warn and error methods; its error is undefined'),
    );
  });

  it('writes through stderrLogger by default: stderr only, formatted like console.error', () => {
    vi.stubEnv('PAIRUNI_LOG', '');
    const err: string[] = [];
    const out: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => (err.push(String(c)), true));
    vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => (out.push(String(c)), true));
    sayAll(createLogger());
    stderrLogger.debug('n=%d', 3);
    expect(err).toEqual(['i\n', 'w 1\n', 'e { x: 2 }\n', 'n=3\n']);
    expect(out).toEqual([]);
  });
});

describe('sidecarLineLevel', () => {
  it('reads the level the sidecar log helper wrote; any other line is debug', () => {
    expect(
      sidecarLineLevel('[pairuni-sidecar 4242 17.5000] warn: controller silent for 4.1s (heartbeat lost); exiting'),
    ).toBe('warn');
    expect(sidecarLineLevel('[pairuni-sidecar 4242 17.5000] error: Traceback (most recent call last):')).toBe('error');
    expect(sidecarLineLevel('[pairuni-sidecar 4242 17.5000] info: parent process is gone; exiting')).toBe('info');
    expect(sidecarLineLevel('[pairuni-sidecar 1 0.1000] debug: rank 0/1 starting')).toBe('debug');
    expect(sidecarLineLevel('/venv/torch/nn/modules/module.py:1: UserWarning: something')).toBe('debug');
    expect(sidecarLineLevel('[pairuni-sidecar 1 0.1] fatal: not a level')).toBe('debug');
    expect(sidecarLineLevel('')).toBe('debug');
  });
});
