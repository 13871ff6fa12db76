/**
 * pairuni: pair-aware RL (PairUni / PairGRPO) for unified vision-language models.
 * A typed SDK that drives a PyTorch sidecar over protocol v1 (ZeroMQ + msgpack + Arrow).
 *
 * @module pairuni
 */
export * from './errors.js';
export * from './data/schemas.js';
export { Sidecar, Tensor, bf16ToF32, f32ToBf16, resolvePython } from './sidecar/index.js';
export type {
  SpawnOptions,
  AttachOptions,
  SidecarInfo,
  CallOptions,
  CallResult,
  RankInfo,
  ControllerStats,
  DType,
  Payload,
  Payloads,
  TypedArray,
} from './sidecar/index.js';
export {
  OPS,
  CAPABILITIES,
  UpdateMetrics,
  SftMetrics,
  EvalResult,
  type OpName,
  type OpArgs,
  type OpReply,
  type WireArgs,
  type WireReply,
  type Capability,
} from './contract/ops.js';
export { FAMILIES, familyOptions } from './contract/families/index.js';
export { toWire, wireRecord } from './contract/wire.js';
export type { OpClient, OpResult } from './sidecar/client.js';
export { probe, type ProbeReport, type Problem } from './env/probe.js';
export { Progress, type ProgressOptions } from './util/progress.js';
export {
  createLogger,
  stderrLogger,
  parseLogLevel,
  LOG_LEVELS,
  type Logger,
  type LogLevel,
  type LogOptions,
  type LogFn,
} from './util/log.js';
export * from './completion/index.js';
export {
  train,
  pairGrpoStep,
  sftStep,
  loadArgs,
  trainMode,
  type TrainMode,
  parseTrainConfig,
  parseUntrustedTrainConfig,
  loadTrainConfig,
  TrainConfig,
  loadPairUG,
  readMetrics,
  latestCheckpoint,
  RunStateError,
  EventWriter,
  type TrainOptions,
  type TrainResult,
  type StepMetrics,
  type CommonStepMetrics,
  type PairGrpoStepMetrics,
  type SftStepMetrics,
  type TrainPair,
  type TrainConfigInput,
  RewardConfig,
  scoreSide,
  remoteRewards,
  type RewardCallback,
  type RewardBatch,
  type GenRewardBatch,
  type UndRewardBatch,
  type RewardTermMetrics,
  readEvals,
  type ExperimentSink,
  type EvalRow,
  LoggerConfig,
  PythonSinks,
  type PythonSinksOptions,
  type TrackerLogger,
} from './train/index.js';
export {
  pairWeight,
  trainWeight,
  groupNormalize,
  sideAdvantages,
  clippedSurrogate,
  trajCoefficients,
  undReward,
  parseAnswerLetter,
  renderQuestion,
  AdvantageError,
  PAIR_MODES,
  type PairMode,
} from './grpo/index.js';
export {
  buildPairUG,
  embedManifests,
  pairFeatures,
  stackFeatures,
  pairSet,
  embedImages,
  parsePairingConfig,
  PairingConfig,
  BackboneSpec,
  ABLATIONS,
  SidecarBackend,
  TsBackend,
  type PairingResult,
  type PairUGResult,
  type PairingBackend,
} from './pairing/index.js';
export { readUnderstanding, readGeneration, type Manifest, type ImageSource } from './data/manifest.js';
export {
  writeGenEvalSamples,
  readGenEvalPrompts,
  genEvalFolder,
  genEvalSampleName,
  genEvalFolderComplete,
  genEvalBatchSeed,
  GENEVAL_SAMPLES,
  GENEVAL_SEED,
  type GenEvalPrompt,
  type GenEvalSamplesOptions,
  type GenEvalSamplesResult,
} from './eval/geneval.js';
