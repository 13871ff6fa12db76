/**
 * Protocol v1 codec (protocols/wire-v1.md): usable on its own, e.g. to write another rank implementation.
 *
 * @module pairuni/protocol
 */
export * from './constants.js';
export * from './header.js';
export * from './tensor.js';
export * from './payload.js';
export * from './arrow.js';
export * from './message.js';
