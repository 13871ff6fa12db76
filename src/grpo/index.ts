export {
  AdvantageError,
  DEFAULT_NORM,
  PAIR_MODES,
  groupNormalize,
  isPaired,
  lossNorm,
  pairWeight,
  trainWeight,
  sideAdvantages,
  type NormOptions,
  type PairMode,
  type SideAdvantages,
} from './advantages.js';
export {
  DEFAULT_UND_INSTRUCTION,
  formatOk,
  letter,
  parseAnswerLetter,
  renderQuestion,
  undReward,
  type UndRewardParts,
} from './rewards.js';
export {
  DEFAULT_SURROGATE,
  clippedSurrogate,
  trajCoefficients,
  type SideLogprobs,
  type SurrogateConfig,
  type SurrogateResult,
} from './surrogate.js';
