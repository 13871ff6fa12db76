/** Whole-message decoding for a non-streamed message: header frame + payload frames. */
import { Flags, type KindName, type Limits } from './constants.js';
import { type BufferDesc, decodeHeaderFrame } from './header.js';
import { checkDescriptors, type DecodedPayloads, decodePayloads } from './payload.js';
import { ProtocolError } from '../errors.js';

/** A whole received message: kind, flags, header map and its payloads. */
export interface DecodedMessage extends DecodedPayloads {
  /** Message kind from the preamble. */
  kind: KindName;
  /** Preamble flag bits ({@link Flags}). */
  flags: number;
  /** The validated msgpack header map. */
  header: Record<string, unknown>;
}

/**
 * Decodes one multipart message (header frame + one frame per payload) under `limits`.
 * A streamed message's or a chunk's payloads are not in these frames, so they come back empty.
 *
 * @throws ProtocolError on any malformed frame, descriptor or size over a limit.
 */
export function decodeMessage(
  frames: readonly Uint8Array[],
  limits: Pick<Limits, 'maxHeaderBytes' | 'maxMessageBytes'>,
): DecodedMessage {
  if (frames.length === 0) throw new ProtocolError('bad_request', 'empty message');
  const { kind, flags, header } = decodeHeaderFrame(frames[0], limits);
  const descs = (header.b as BufferDesc[] | undefined) ?? [];
  checkDescriptors(descs, limits);
  if (kind === 'chunk') return { kind, flags, header, tensors: {}, tables: {} }; // raw stream bytes, no descriptors
  if (flags & Flags.streamed) {
    if (frames.length > 1) throw new ProtocolError('bad_request', 'streamed header must not carry payload frames');
    return { kind, flags, header, tensors: {}, tables: {} };
  }
  return { kind, flags, header, ...decodePayloads(descs, frames.slice(1)) };
}
