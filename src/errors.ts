import { WIRE_ERROR_CODES } from './protocol/constants.gen.js';

/**
 * Every error the SDK throws is a PairuniError subclass with a stable `code`, so callers can
 * `catch (e) { if (e instanceof SidecarError && e.code === 'rank_lost') ... }`.
 */

export { WIRE_ERROR_CODES };
/** An error code a sidecar can answer with (protocols/wire-v1.md). */
export type WireErrorCode = (typeof WIRE_ERROR_CODES)[number];

/** Codes of errors raised in the SDK itself (not answered by a sidecar). */
export const SDK_ERROR_CODES = [
  'start_failed',
  'config',
  'data',
  'aborted',
  'advantage',
  'rollout',
  'demo',
  'probe_failed',
  'tfrecord',
  'llm_api',
  'llm_request_rejected',
  'budget_exhausted',
  'capability',
  'reward',
  'sink',
] as const;
/** The closed set of codes a PairuniError carries. */
export type ErrorCode = WireErrorCode | (typeof SDK_ERROR_CODES)[number];

/** Base class of every error the SDK throws; `code` says which kind (`instanceof` the subclass works too). */
export class PairuniError extends Error {
  /** The error's kind: a wire code for errors a sidecar answered, an SDK code otherwise. */
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A frame, header or payload that violates protocol v1 (raised while decoding, before any dispatch). */
export class ProtocolError extends PairuniError {
  constructor(
    /** The wire code the other side is (or would be) told. */
    readonly wireCode: WireErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(wireCode, message, options);
  }
}

/**
 * An error answered by (or about) a sidecar rank. Each wire code has its own subclass
 * (`catch (e) { if (e instanceof RankLostError) ... }`); `detail.type` names the Python exception class.
 * `SidecarError.generate` builds the subclass for a code.
 */
export class SidecarError extends PairuniError {
  declare readonly code: WireErrorCode;
  constructor(
    code: WireErrorCode,
    message: string,
    /** The same call may succeed if sent again (e.g. `overloaded`). */
    readonly retryable = false,
    /** Structured context from the sidecar: `type` (Python exception class), `field`, `side`, ... */
    readonly detail: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }

  /** The subclass of {@link SidecarError} for a wire code (e.g. `rank_lost` → {@link RankLostError}). */
  static generate(
    code: WireErrorCode,
    message: string,
    retryable = false,
    detail: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ): SidecarError {
    const Cls = BY_CODE[code];
    return Cls
      ? new Cls(message, retryable, detail, options)
      : new SidecarError(code, message, retryable, detail, options);
  }
}

type Sub = new (
  message: string,
  retryable?: boolean,
  detail?: Record<string, unknown>,
  options?: { cause?: unknown },
) => SidecarError;
const sub = (code: WireErrorCode): Sub =>
  class extends SidecarError {
    constructor(
      message: string,
      retryable = false,
      detail: Record<string, unknown> = {},
      options?: { cause?: unknown },
    ) {
      super(code, message, retryable, detail, options);
    }
  };

/** A malformed request or invalid op arguments; `detail.field` names the field when one is at fault. */
export class BadRequestError extends sub('bad_request') {}
export class UnsupportedVersionError extends sub('unsupported_version') {}
export class UnknownOpError extends sub('unknown_op') {}
export class CancelledError extends sub('cancelled') {}
export class DeadlineError extends sub('deadline') {}
/** A rank died or stopped answering; its pending calls fail with this. */
export class RankLostError extends sub('rank_lost') {}
export class OverloadedError extends sub('overloaded') {}
export class TooLargeError extends sub('too_large') {}
export class NotFoundError extends sub('not_found') {}
/** The op's handler raised; `detail.type` is the Python exception class, `detail.traceback` its tail. */
export class OpFailedError extends sub('op_failed') {}
export class InternalError extends sub('internal') {}

const BY_CODE: Record<WireErrorCode, Sub> = {
  bad_request: BadRequestError,
  unsupported_version: UnsupportedVersionError,
  unknown_op: UnknownOpError,
  cancelled: CancelledError,
  deadline: DeadlineError,
  rank_lost: RankLostError,
  overloaded: OverloadedError,
  too_large: TooLargeError,
  not_found: NotFoundError,
  op_failed: OpFailedError,
  internal: InternalError,
};

/** The sidecar process could not be started, or exited before saying hello. */
export class SidecarStartError extends PairuniError {
  constructor(
    message: string,
    /** The last lines the sidecar wrote to stderr (also appended to the message). */
    readonly stderrTail = '',
    options?: { cause?: unknown },
  ) {
    super('start_failed', stderrTail ? `${message}\n--- sidecar stderr (tail) ---\n${stderrTail}` : message, options);
  }
}

/** Ranks of a world that never said hello in time; `missing` names them (0-based rank numbers). */
export class RanksMissingError extends SidecarStartError {
  constructor(
    message: string,
    /** Rank numbers that never registered. */
    readonly missing: number[],
    /** The world size that was expected. */
    readonly world: number,
    stderrTail = '',
    options?: { cause?: unknown },
  ) {
    super(message, stderrTail, options);
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
  constructor(
    message: string,
    /** The file the bad input came from. */
    readonly file?: string,
    /** Its row: 1-based line for JSONL, 0-based row for tables. */
    readonly row?: number,
    options?: { cause?: unknown },
  ) {
    super('data', message, options);
  }
}

/** A long job stopped on request (Ctrl-C / AbortSignal); everything finished so far is saved. */
export class AbortedError extends PairuniError {
  constructor(message = 'aborted', options?: { cause?: unknown }) {
    super('aborted', message, options);
  }
}

/**
 * The loaded model's adapter does not declare a capability the job needs (e.g. `gen_rollout` to
 * generate images); `capabilities` is what it declares.
 */
export class CapabilityError extends PairuniError {
  constructor(
    message: string,
    /** The capability the job needs (e.g. `gen_rollout`). */
    readonly capability: string,
    /** The capabilities the adapter declares. */
    readonly capabilities: readonly string[],
    options?: { cause?: unknown },
  ) {
    super('capability', message, options);
  }
}

/** Why a reward source's scores were refused. */
export type RewardFailure = 'non_finite' | 'length' | 'timeout' | 'http' | 'bad_reply' | 'callback';

/**
 * A reward source gave no usable scores for a training step: a NaN/Inf score, the wrong number of
 * scores, a server that timed out or refused, a callback that threw. Names the source, the 0-based
 * step and (for a bad score) the item; the trainer stops at that step's boundary with a resumable checkpoint.
 */
export class RewardError extends PairuniError {
  constructor(
    message: string,
    /** The reward source: its key, kind and side, e.g. `'gen/reward' (server http://…, generation)` or a sum's term key. */
    readonly source: string,
    /** The 0-based step whose rewards were refused; a resume reruns it. */
    readonly step: number,
    /** What was wrong with the scores. */
    readonly reason: RewardFailure,
    /** The 0-based item of the batch whose score was bad, when one was. */
    readonly item?: number,
    options?: { cause?: unknown },
  ) {
    super('reward', message, options);
  }
}

/**
 * An experiment tracker of `loggers` (W&B, MLflow) failed, or its process did: names the tracker
 * (`wandb`, `mlflow`; `sinks` for the tracker process itself) and the command that failed. During
 * training the run stops at that step's boundary with a checkpoint; a resume logs the steps the
 * tracker missed from metrics.jsonl.
 */
export class SinkError extends PairuniError {
  constructor(
    message: string,
    /** The tracker: `wandb`, `mlflow`, or `sinks` for the process that runs them. */
    readonly sink: string,
    /** The command that failed: `start`, `log`, `table`, `image` or `close`. */
    readonly what: string,
    options?: { cause?: unknown },
  ) {
    super('sink', message, options);
  }
}
