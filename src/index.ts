/**
 * pairuni: pair-aware RL (PairUni / PairGRPO) for unified vision-language models.
 * A typed SDK that drives a PyTorch sidecar over protocol v1 (ZeroMQ + msgpack + Arrow).
 */
export * from './errors.js';
export * from './data/schemas.js';
export { Sidecar, Tensor, bf16ToF32, f32ToBf16, resolvePython } from './sidecar/index.js';
export type { SpawnOptions, AttachOptions, SidecarInfo, CallOptions, CallResult, RankInfo, ControllerStats, DType, Payload, Payloads, TypedArray } from './sidecar/index.js';
export { probe, type ProbeReport, type Problem } from './env/probe.js';
export { Progress, type ProgressOptions } from './util/progress.js';
export * from './completion/index.js';
