/** Pairing: build PairUG datasets (features → aligned medoids → exact greedy retrieved pairs). */
export {
  pairFeatures,
  stackFeatures,
  type PairingInput,
  type PairingResult,
  type PairingOptions,
  type AlignedPair,
  type CrossPair,
  type SkippedMedoid,
  type Side,
  type PairingPhase,
} from './pair.js';
export {
  PairingConfig,
  KMeansConfig,
  Ablation,
  ABLATIONS,
  parsePairingConfig,
  type PairingConfigInput,
} from './config.js';
export { pairSet, type OutPair, type SideRef } from './ablations.js';
export {
  buildPairUG,
  embedManifests,
  type BuildPairUGOptions,
  type EmbedManifestsOptions,
  type EmbeddedManifests,
  type PairUGResult,
  type Stage,
} from './pipeline.js';
export { embedImages, BackboneSpec, type EmbedOptions, type EmbedResult } from './embed.js';
export { FeatureCache } from './featureCache.js';
export {
  toPairRecords,
  pairStats,
  formatStats,
  writePairUG,
  pairsTable,
  alignableFor,
  type PairStats,
} from './output.js';
export { exactSearch, type ExactLists } from './exact.js';
export { miniBatchKMeans, exactLabels, type KMeansResult, type KMeansPhase } from './kmeans.js';
export { medoids, clusterDiagnostics, type ClusterDiagnostics } from './medoids.js';
export { retrieve, greedyMatch } from './retrieve.js';
export { matrix, l2NormalizeRows, type Matrix } from './matrix.js';
export { Rng } from '../util/prng.js';
export { TsBackend } from './backend/ts.js';
export { SidecarBackend } from './backend/sidecar.js';
export type { PairingBackend, MatrixHandle, TopkRequest, TopkResult } from './backend/types.js';
