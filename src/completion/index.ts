/**
 * Semantic completion (paper §2.1.1): fill U samples with a generation prompt and G samples with a
 * multiple-choice QA, each checked against its source. Names are prefixed so that the package root
 * can re-export this module with `export *`.
 */
export { Completer, CompletionRun, type CompleterDeps, type RunOptions as CompletionRunOptions } from './completer.js';
export {
  CompleterConfig,
  parseCompleterConfig,
  type CompleterConfigInput,
  Price as CompletionPrice,
  RetryConfig as CompletionRetryConfig,
  BudgetConfig as CompletionBudgetConfig,
} from './config.js';
export { CompletionApiError, RequestRejectedError, BudgetExhaustedError } from './errors.js';
export { CompletionCache } from './cache.js';
export { readCompletionManifest } from './manifest.js';
export {
  writeCompletionOutputs,
  completionOutputPaths,
  type CompletionOutputPaths,
  type RejectionRow as CompletionRejectionRow,
} from './outputs.js';
export type {
  CompletionReport,
  DirectionCounts as CompletionDirectionCounts,
  ModelUsage as CompletionModelUsage,
  StoppedBy as CompletionStoppedBy,
} from './report.js';
export { TEMPLATE_VERSIONS as COMPLETION_TEMPLATE_VERSIONS, promptClassOf, type PromptClass } from './templates.js';
export {
  REJECT_REASONS as COMPLETION_REJECT_REASONS,
  UNFINISHED_REASONS as COMPLETION_UNFINISHED_REASONS,
  type CompletionItem,
  type CompletionResult,
  type Direction as CompletionDirection,
  type ItemSource as CompletionItemSource,
  type ItemStats as CompletionItemStats,
  type Origin as CompletionOrigin,
  type RejectReason as CompletionRejectReason,
  type UnfinishedReason as CompletionUnfinishedReason,
} from './types.js';
export type { ImageSource as CompletionImageSource } from './images.js';
export type { Sleep as CompletionSleep } from './chat-client.js';
export {
  startScriptedServer,
  type ScriptedServer,
  type ScriptedHandler,
  type ScriptedReply,
  type ScriptedRequest,
} from './scripted-server.js';
