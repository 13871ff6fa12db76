export { Sidecar, type SpawnOptions, type AttachOptions, type SidecarInfo } from './sidecar.js';
export type { CallOptions, CallResult, RankInfo, ControllerStats } from './controller.js';
export { Tensor, bf16ToF32, f32ToBf16, type TypedArray } from '../protocol/tensor.js';
export type { DType } from '../protocol/constants.js';
export type { Payload, Payloads } from '../protocol/payload.js';
export { resolvePython, PACKAGE_ROOT } from './python.js';
export {
  generateKeyPair,
  readKeyPair,
  writeKeyPair,
  type AuthEvent,
  type CurveOptions,
  type KeyPair,
} from './curve.js';
