export {
  GenConfig,
  LossConfig,
  ModelConfig,
  OptimConfig,
  RESUMABLE_CHANGES,
  TrainConfig,
  UndConfig,
  loadTrainConfig,
  parseTrainConfig,
  type TrainConfigInput,
} from './config.js';
export { loadPairUG, stepIndices, type TrainPair } from './data.js';
export { checkpointsDir, latestCheckpoint, writeCheckpoint, type Checkpoint, type TrainerState } from './checkpoint.js';
export { RunLog, readMetrics, type StepMetrics } from './metrics.js';
export { EventWriter, crc32c, decodeEvent, encodeEvent, maskedCrc32c, readRecords, type TFEvent } from './tfevents.js';
export { RunStateError, grpoSides, loadArgs, pairGrpoStep, stepSeed, train, type TrainOptions, type TrainResult } from './trainer.js';
