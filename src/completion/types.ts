/** Items going into semantic completion and the results coming out. */
import type { GenerationRecord, UnderstandingRecord } from '../data/schemas.js';
import type { ImageSource } from './images.js';

/** u2c: understanding sample (I, Q, A) → generation prompt C. g2qa: generation sample (I, C) → (Q, choices, A). */
export type Direction = 'u2c' | 'g2qa';

/** Where an item came from, for error messages and the rejections file. */
export interface ItemSource {
  /** The manifest the item was read from. */
  file?: string;
  /** 1-based line number in `file`. */
  row?: number;
}

/**
 * One item to complete: an understanding record that needs a caption (`u2c`) or a generation record
 * that needs a question, choices and answer (`g2qa`), with its image.
 */
export type CompletionItem =
  | { direction: 'u2c'; record: UnderstandingRecord; image: ImageSource; source?: ItemSource }
  | { direction: 'g2qa'; record: GenerationRecord; image: ImageSource; source?: ItemSource };

/** Why an item was given up on for good (the outcome is cached; a rerun does not retry it). */
export const REJECT_REASONS = [
  /** The generator's output never passed validation within `maxFormatRetries`. */
  'invalid_output',
  /** The generator refused (refusal field or content filter). */
  'refusal',
  /** The checker still found a contradiction after `maxRegenerations` regenerations. */
  'inconsistent',
  /** The checker's own output never passed validation. */
  'checker_invalid_output',
  /** The checker refused. */
  'checker_refusal',
] as const;
/** Why an item was rejected for good (cached as final). */
export type RejectReason = (typeof REJECT_REASONS)[number];

/**
 * Why an item was left for the next run (nothing about it is cached as final): the spend guard, a
 * request the endpoint refused, or the run ended first ('stopped': a stop request, Ctrl-C, an abort
 * or a fatal error; calls it had finished are in the cache).
 */
export const UNFINISHED_REASONS = ['budget', 'request_error', 'stopped'] as const;
/** Why an item was left for the next run. */
export type UnfinishedReason = (typeof UNFINISHED_REASONS)[number];

/** Where an outcome came from: live calls (possibly partly replayed), the outcome cache, or the input itself. */
export type Origin = 'llm' | 'cache' | 'input';

/** The calls and retries one item cost. */
export interface ItemStats {
  /** Chat calls this item needed (live + replayed from the call journal). */
  calls: number;
  /** Of those, calls answered from the journal without a request. */
  replayedCalls: number;
  /** Re-asks after output that failed validation. */
  formatRetries: number;
  /** Fresh generations after the checker found a contradiction. */
  regenerations: number;
}

interface ResultBase {
  direction: Direction;
  id: string;
  /** Position of the item in the input sequence. */
  index: number;
  source?: ItemSource;
}

/** The outcome of one item: accepted (the completed record), rejected (final) or unfinished (retried next run). */
export type CompletionResult =
  | (ResultBase & {
      status: 'accepted';
      direction: 'u2c';
      record: UnderstandingRecord;
      origin: Origin;
      stats: ItemStats;
    })
  | (ResultBase & {
      status: 'accepted';
      direction: 'g2qa';
      record: GenerationRecord;
      origin: Origin;
      stats: ItemStats;
    })
  | (ResultBase & {
      status: 'rejected';
      reason: RejectReason;
      detail: string;
      origin: Origin;
      stats: ItemStats;
    })
  | (ResultBase & { status: 'unfinished'; reason: UnfinishedReason; detail: string });

/** The fields semantic completion fills in, per direction. */
export type U2cFill = { caption: string };
export type G2qaFill = { question: string; choices: string[]; answer: string };
