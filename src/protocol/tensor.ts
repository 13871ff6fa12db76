/**
 * Raw dense tensors: dtype + shape + one C-contiguous little-endian buffer.
 * bf16/f16 have no JS number type: their `data` is a Uint16Array of the raw bits.
 */
import { ProtocolError } from '../errors.js';
import { DTYPES, type DType, MAX_DIMS } from './constants.js';

/** The typed arrays a {@link Tensor} can view its bytes as (bf16 and f16 as `Uint16Array`). */
export type TypedArray =
  Uint8Array | Int8Array | Int16Array | Uint16Array | Int32Array | BigInt64Array | Float32Array | Float64Array;

const VIEW: Record<DType, new (buf: ArrayBufferLike, off: number, len: number) => TypedArray> = {
  bool: Uint8Array,
  u8: Uint8Array,
  i8: Int8Array,
  i16: Int16Array,
  i32: Int32Array,
  i64: BigInt64Array,
  f16: Uint16Array,
  bf16: Uint16Array,
  f32: Float32Array,
  f64: Float64Array,
};

function dtypeOf(a: TypedArray): DType {
  if (a instanceof Float32Array) return 'f32';
  if (a instanceof Float64Array) return 'f64';
  if (a instanceof Int32Array) return 'i32';
  if (a instanceof BigInt64Array) return 'i64';
  if (a instanceof Int16Array) return 'i16';
  if (a instanceof Int8Array) return 'i8';
  if (a instanceof Uint8Array) return 'u8';
  throw new ProtocolError('bad_request', 'Uint16Array is ambiguous (f16 or bf16): pass the dtype explicitly');
}

/** Number of elements for a shape, or a ProtocolError when it overflows or is invalid. */
export function numel(shape: readonly number[]): number {
  if (shape.length > MAX_DIMS)
    throw new ProtocolError('bad_request', `shape has ${shape.length} dims (max ${MAX_DIMS})`);
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0)
      throw new ProtocolError('bad_request', `invalid dimension ${d} in shape [${shape}]`);
    n *= d;
    if (!Number.isSafeInteger(n)) throw new ProtocolError('too_large', `shape [${shape}] overflows 2^53 elements`);
  }
  return n;
}

/**
 * A dense n-d array as it travels: dtype, shape and little-endian C-order bytes. Views, never copies,
 * so a tensor received from the sidecar is read in place.
 */
export class Tensor {
  /** Raw little-endian bytes (C order). */
  readonly bytes: Uint8Array;
  private view_?: TypedArray;

  constructor(
    /** Element type. */
    readonly dtype: DType,
    /** Dimensions, outermost first (C order). */
    readonly shape: readonly number[],
    bytes: Uint8Array,
  ) {
    if (!(dtype in DTYPES)) throw new ProtocolError('bad_request', `unknown dtype '${dtype}'`);
    const want = numel(shape) * DTYPES[dtype];
    if (!Number.isSafeInteger(want)) throw new ProtocolError('too_large', `tensor [${shape}] ${dtype} is too large`);
    if (bytes.byteLength !== want) {
      throw new ProtocolError(
        'bad_request',
        `tensor [${shape}] ${dtype} needs ${want} bytes, buffer has ${bytes.byteLength}`,
      );
    }
    this.bytes = bytes;
  }

  /** Wraps a typed array without copying. `shape` defaults to 1-D. */
  static from(data: TypedArray, shape?: readonly number[], dtype?: DType): Tensor {
    const dt = dtype ?? dtypeOf(data);
    if (VIEW[dt].name !== data.constructor.name && !(dt === 'bool' && data instanceof Uint8Array)) {
      throw new ProtocolError('bad_request', `dtype ${dt} does not match a ${data.constructor.name}`);
    }
    return new Tensor(dt, shape ?? [data.length], new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  /** Number of elements (product of the shape). */
  get size(): number {
    return numel(this.shape);
  }

  /** Byte length of the data. */
  get nbytes(): number {
    return this.bytes.byteLength;
  }

  /**
   * A typed-array view of the elements. Zero-copy when the bytes are aligned for the dtype;
   * otherwise (frames at odd offsets) one copy, made once.
   */
  get data(): TypedArray {
    if (this.view_) return this.view_;
    const item = DTYPES[this.dtype];
    const Ctor = VIEW[this.dtype];
    let b = this.bytes;
    if (b.byteOffset % item !== 0) b = new Uint8Array(b); // copy to a fresh, aligned buffer
    this.view_ = new Ctor(b.buffer, b.byteOffset, b.byteLength / item);
    return this.view_;
  }

  /** `Tensor(f32, [2, 3])`: dtype and shape, never the data (it may be gigabytes). */
  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}])`;
  }
}

/** bf16 bits → float32 value. */
export function bf16ToF32(bits: number): number {
  const buf = new DataView(new ArrayBuffer(4));
  buf.setUint32(0, (bits & 0xffff) << 16);
  return buf.getFloat32(0);
}

/** float32 → bf16 bits, round-to-nearest-even (NaN stays NaN). */
export function f32ToBf16(x: number): number {
  const buf = new DataView(new ArrayBuffer(4));
  buf.setFloat32(0, x);
  const u = buf.getUint32(0);
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
