export {
  GenConfig,
  JsonlLogger,
  LOGGER_TYPES,
  LoggerConfig,
  LossConfig,
  MlflowLogger,
  TensorboardLogger,
  WandbLogger,
  ModelConfig,
  OptimConfig,
  RESUMABLE_CHANGES,
  TrainConfig,
  UndConfig,
  loadTrainConfig,
  parseTrainConfig,
  parseUntrustedTrainConfig,
  type TrainConfigInput,
} from './config.js';
export { loadPairUG, stepIndices, type TrainPair } from './data.js';
export {
  assertUsableOut,
  checkpointsDir,
  latestCheckpoint,
  removeStaleTemps,
  writeCheckpoint,
  type Checkpoint,
  type SkippedCheckpoint,
  type TrainerState,
} from './checkpoint.js';
export {
  RunLog,
  readEvals,
  readMetrics,
  type EvalRow,
  type StepMetrics,
  type CommonStepMetrics,
  type PairGrpoStepMetrics,
  type RewardTermMetrics,
  type SftStepMetrics,
} from './metrics.js';
export {
  EventWriter,
  SESSION_STATUS,
  crc32c,
  decodeEvent,
  encodeEvent,
  maskedCrc32c,
  readRecords,
  type SessionLog,
  type TFEvent,
} from './tfevents.js';
export {
  RunStateError,
  grpoSides,
  isTrainerNotice,
  loadArgs,
  pairGrpoStep,
  stepSeed,
  train,
  trainMode,
  type TrainMode,
  type TrainOptions,
  type TrainResult,
} from './trainer.js';
export { sftExamples, sftSeed, sftStep } from './sft.js';
export {
  scoreSide,
  sidecarGenInputs,
  type RolloutPart,
  type GenRewardBatch,
  type GenRewardInputs,
  type RewardBatch,
  type RewardCallback,
  type RewardContext,
  type SideRewards,
  type UndRewardBatch,
  type UndRewardInputs,
} from './reward-sources.js';
export {
  REWARD_CONTENT_TYPE,
  encodeRewardRequest,
  remoteRewards,
  type RemoteRewardOptions,
  type RemoteRewardRequest,
} from './remote-reward.js';
export {
  RewardConfig,
  RewardSource,
  RewardSpec,
  RemoteRewardSource,
  describeSource,
  rewardTerms,
  type RewardConfigInput,
} from '../contract/reward-config.js';
export { evalDue, evaluatePolicy, type Evaluation } from './evaluate.js';
export { type ExperimentSink } from './sinks.js';
export {
  LOGGER_STATE_FILE,
  PythonSinks,
  isTrackerLogger,
  type LoggerState,
  type PythonSinksOptions,
  type TrackerLogger,
} from './python-sinks.js';
