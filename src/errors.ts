/**
 * Every error the SDK throws is a PairuniError subclass with a stable `code`, so callers can
 * `catch (e) { if (e instanceof SidecarError && e.code === 'rank_lost') ... }`.
 */

/** Closed set of wire error codes (protocols/wire-v1.md §Errors). */
export const WIRE_ERROR_CODES = [
  'bad_request',
  'unsupported_version',
  'unknown_op',
  'cancelled',
  'deadline',
  'rank_lost',
  'overloaded',
  'too_large',
  'not_found',
  'op_failed',
  'internal',
] as const;
export type WireErrorCode = (typeof WIRE_ERROR_CODES)[number];

export class PairuniError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A frame, header or payload that violates protocol v1 (raised while decoding, before any dispatch). */
export class ProtocolError extends PairuniError {
  constructor(
    readonly wireCode: WireErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(wireCode, message, options);
  }
}

/** An error answered by (or about) a sidecar rank. */
export class SidecarError extends PairuniError {
  declare readonly code: WireErrorCode;
  constructor(
    code: WireErrorCode,
    message: string,
    readonly retryable = false,
    readonly detail: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** The sidecar process could not be started, or exited before saying hello. */
export class SidecarStartError extends PairuniError {
  constructor(message: string, readonly stderrTail = '', options?: { cause?: unknown }) {
    super('start_failed', stderrTail ? `${message}\n--- sidecar stderr (tail) ---\n${stderrTail}` : message, options);
  }
}

/** A configuration object or file that does not validate. */
export class ConfigError extends PairuniError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('config', message, options);
  }
}

/** Input data (manifests, images, feature files) that cannot be used; names the file and row. */
export class DataError extends PairuniError {
  constructor(message: string, readonly file?: string, readonly row?: number, options?: { cause?: unknown }) {
    super('data', message, options);
  }
}

/** A long job stopped on request (Ctrl-C / AbortSignal); everything finished so far is saved. */
export class AbortedError extends PairuniError {
  constructor(message = 'aborted', options?: { cause?: unknown }) {
    super('aborted', message, options);
  }
}
