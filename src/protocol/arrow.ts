/**
 * Arrow payloads: one frame = one complete IPC stream. v1 allows a subset (protocols/wire-v1.md
 * §Arrow): primitive numbers, Bool, Utf8, List<T> (int32 offsets), FixedSizeList, Struct; no nulls,
 * no dictionaries, no compression. N-d fixed-shape columns are FixedSizeList with the canonical
 * `arrow.fixed_shape_tensor` extension metadata.
 */
import * as arrow from 'apache-arrow';
import { ProtocolError } from '../errors.js';

/** Arrow's canonical extension name marking a FixedSizeList column as an n-d tensor column. */
export const FIXED_SHAPE_TENSOR = 'arrow.fixed_shape_tensor';

/** One Arrow IPC stream of `table`, refused (`ProtocolError` `bad_request`) if it leaves the v1 subset. */
export function encodeArrow(table: arrow.Table): Uint8Array {
  validateTable(table, 'outgoing');
  return arrow.tableToIPC(table, 'stream');
}

/** Decodes and validates one IPC stream. Misaligned input is copied first (arrow-js would copy silently). */
export function decodeArrow(bytes: Uint8Array, what = 'arrow payload'): arrow.Table {
  let input = bytes;
  if (input.byteOffset % 8 !== 0) input = new Uint8Array(input);
  let table: arrow.Table;
  try {
    const used = streamExtent(input);
    if (used !== input.byteLength) throw new Error(`${input.byteLength - used} bytes after the end of the IPC stream`);
    const reader = arrow.RecordBatchReader.from(input);
    if (!reader.isSync()) throw new Error('not a synchronous IPC source');
    reader.open();
    if (reader.isFile()) throw new Error('an Arrow IPC *file*; v1 payloads are IPC streams');
    if (!reader.schema) throw new Error('no schema message');
    const batches = [...reader];
    table = new arrow.Table(reader.schema, batches);
    if (reader.dictionaries.size > 0) throw new Error('dictionary batches are not allowed in v1');
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    throw new ProtocolError('bad_request', `${what}: invalid Arrow IPC stream: ${(e as Error).message}`, { cause: e });
  }
  validateTable(table, what);
  return table;
}

/**
 * Walks the IPC stream framing (continuation, metadata length, flatbuffer Message.bodyLength) and
 * returns how many bytes the first stream occupies, so trailing garbage or a second stream is
 * caught (arrow readers silently stop at the first end-of-stream marker).
 */
export function streamExtent(buf: Uint8Array): number {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;
  for (;;) {
    if (pos === buf.byteLength) return pos; // a stream may end without the EOS marker
    if (pos + 4 > buf.byteLength) throw new Error('truncated message prefix');
    let len = dv.getInt32(pos, true);
    let meta = pos + 4;
    if (len === -1) {
      if (pos + 8 > buf.byteLength) throw new Error('truncated message prefix');
      len = dv.getInt32(pos + 4, true);
      meta = pos + 8;
    }
    if (len === 0) return meta; // end-of-stream marker
    if (len < 0 || meta + len > buf.byteLength) throw new Error(`metadata length ${len} out of range`);
    // flatbuffers: root table offset, then the vtable; Message.bodyLength is field 3 (int64).
    const table = meta + dv.getUint32(meta, true);
    if (table + 4 > meta + len) throw new Error('bad message flatbuffer');
    const vtable = table - dv.getInt32(table, true);
    if (vtable < meta || vtable + 4 > meta + len) throw new Error('bad message flatbuffer');
    const vsize = dv.getUint16(vtable, true);
    const fieldOff = vsize > 10 ? dv.getUint16(vtable + 10, true) : 0;
    let body = 0;
    if (fieldOff) {
      if (table + fieldOff + 8 > meta + len) throw new Error('bad message flatbuffer');
      body = Number(dv.getBigInt64(table + fieldOff, true));
    }
    if (!Number.isSafeInteger(body) || body < 0 || meta + len + body > buf.byteLength)
      throw new Error(`message body of ${body} bytes runs past the payload`);
    pos = meta + len + body;
  }
}

const ALLOWED = new Set<arrow.Type>([
  arrow.Type.Bool,
  arrow.Type.Int,
  arrow.Type.Float,
  arrow.Type.Utf8,
  arrow.Type.List,
  arrow.Type.FixedSizeList,
  arrow.Type.Struct,
]);

function validateField(field: arrow.Field, path: string): void {
  const t = field.type;
  if (!ALLOWED.has(t.typeId))
    throw new ProtocolError('bad_request', `${path}: Arrow type ${t} is outside the v1 subset`);
  const ext = field.metadata.get('ARROW:extension:name');
  if (ext !== undefined) {
    if (ext !== FIXED_SHAPE_TENSOR) throw new ProtocolError('bad_request', `${path}: unknown extension type '${ext}'`);
    if (!arrow.DataType.isFixedSizeList(t))
      throw new ProtocolError('bad_request', `${path}: ${ext} must be a FixedSizeList`);
    let meta: { shape?: unknown };
    try {
      meta = JSON.parse(field.metadata.get('ARROW:extension:metadata') ?? '');
    } catch {
      throw new ProtocolError('bad_request', `${path}: invalid ${ext} metadata JSON`);
    }
    const shape = meta.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new ProtocolError('bad_request', `${path}: ${ext} metadata needs an integer 'shape' array`);
    }
    const prod = shape.reduce((a: number, b: number) => a * b, 1);
    if (prod !== t.listSize)
      throw new ProtocolError('bad_request', `${path}: shape [${shape}] does not match list size ${t.listSize}`);
  }
  if (arrow.DataType.isFixedSizeList(t) && t.listSize <= 0)
    throw new ProtocolError('bad_request', `${path}: FixedSizeList size must be > 0`);
  for (const c of t.children ?? []) validateField(c, `${path}.${c.name}`);
}

function validateData(d: arrow.Data, path: string): void {
  if (d.nullCount > 0) throw new ProtocolError('bad_request', `${path}: nulls are not allowed in v1 payloads`);
  const t = d.type;
  if (arrow.DataType.isList(t) || arrow.DataType.isUtf8(t)) {
    const off = d.valueOffsets as Int32Array | undefined;
    // Pitfall: arrow-js may hand back more offsets than length+1; only the first length+1 count.
    if (!off || off.length < d.length + 1) throw new ProtocolError('bad_request', `${path}: offsets buffer too short`);
    const childLen = arrow.DataType.isList(t) ? d.children[0].length : (d.values as Uint8Array).length;
    let prev = off[0];
    if (prev < 0) throw new ProtocolError('bad_request', `${path}: negative offset`);
    for (let i = 1; i <= d.length; i++) {
      const o = off[i];
      if (o < prev) throw new ProtocolError('bad_request', `${path}: offsets are not monotonic at row ${i - 1}`);
      prev = o;
    }
    if (prev > childLen)
      throw new ProtocolError('bad_request', `${path}: offsets point past the values (${prev} > ${childLen})`);
  }
  if (arrow.DataType.isFixedSizeList(t)) {
    const need = d.length * t.listSize;
    if (d.children[0].length < need) throw new ProtocolError('bad_request', `${path}: FixedSizeList values too short`);
  }
  if (arrow.DataType.isInt(t) || arrow.DataType.isFloat(t)) {
    const v = d.values as ArrayLike<unknown> | undefined;
    if (!v || v.length < d.offset + d.length)
      throw new ProtocolError('bad_request', `${path}: values buffer too short`);
  }
  d.children.forEach((c, i) => validateData(c, `${path}.${i}`));
}

/**
 * Checks a table against the v1 Arrow subset (no nulls, no dictionaries, valid offsets and tensor
 * metadata) before its bytes are trusted; `what` prefixes the error message.
 *
 * @throws ProtocolError `bad_request` naming the column and what is wrong.
 */
export function validateTable(table: arrow.Table, what: string): void {
  for (const f of table.schema.fields) validateField(f, `${what}: column '${f.name}'`);
  for (const batch of table.batches) {
    batch.data.children.forEach((c, i) => validateData(c, `${what}: column '${table.schema.fields[i].name}'`));
  }
}

/** A FixedSizeList field carrying the canonical fixed-shape-tensor extension metadata. */
export function fixedShapeTensorField(
  name: string,
  shape: number[],
  valueType: arrow.DataType = new arrow.Float32(),
): arrow.Field {
  const size = shape.reduce((a, b) => a * b, 1);
  const type = new arrow.FixedSizeList(size, new arrow.Field('item', valueType, false));
  return new arrow.Field(
    name,
    type,
    false,
    new Map([
      ['ARROW:extension:name', FIXED_SHAPE_TENSOR],
      ['ARROW:extension:metadata', JSON.stringify({ shape })],
    ]),
  );
}

/** Offsets (exactly rows+1) and flat values of a List<Int32> column, zero-copy when contiguous. */
export function listColumn(table: arrow.Table, name: string): { offsets: Int32Array; values: Int32Array } {
  const col = table.getChild(name);
  if (!col) throw new ProtocolError('bad_request', `no column '${name}'`);
  const offsets = new Int32Array(col.length + 1);
  const parts: Int32Array[] = [];
  let base = 0;
  let row = 0;
  for (const d of col.data) {
    const off = d.valueOffsets as Int32Array;
    const vals = d.children[0].values as Int32Array;
    for (let i = 0; i < d.length; i++) offsets[row + i + 1] = base + (off[i + 1] - off[0]);
    parts.push(vals.subarray(d.children[0].offset + off[0], d.children[0].offset + off[d.length]));
    base += off[d.length] - off[0];
    row += d.length;
  }
  const values = parts.length === 1 ? parts[0] : Int32Array.from(parts.flatMap((p) => Array.from(p)));
  return { offsets, values };
}
