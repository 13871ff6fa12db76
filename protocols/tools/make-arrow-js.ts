/**
 * Writes protocols/vectors/arrow-from-arrowjs.arrows: the table of arrow-expected.json, encoded by
 * apache-arrow (JS), for the Python suite to read. `npx tsx protocols/tools/make-arrow-js.ts`
 */
import { readFileSync, writeFileSync } from 'node:fs';
import {
  Field,
  Float32,
  Int32,
  List,
  makeData,
  RecordBatch,
  Schema,
  Struct,
  Table,
  Utf8,
  vectorFromArray,
  type FixedSizeList,
} from 'apache-arrow';
import { encodeArrow, fixedShapeTensorField } from '../../src/protocol/arrow.js';

const dir = new URL('../vectors/', import.meta.url);
const want = JSON.parse(readFileSync(new URL('arrow-expected.json', dir), 'utf8')) as {
  tokens: number[][];
  reward: number[];
  text: string[];
  img: { shape: number[]; values: number[] };
};
const n = want.tokens.length;
const offsets = Int32Array.from([0, ...want.tokens.map((_, i) => want.tokens.slice(0, i + 1).flat().length)]);
const listType = new List(new Field('item', new Int32(), true));
const tokens = makeData({
  type: listType,
  length: n,
  nullCount: 0,
  valueOffsets: offsets,
  child: makeData({ type: new Int32(), length: offsets[n], nullCount: 0, data: Int32Array.from(want.tokens.flat()) }),
});
const imgField = fixedShapeTensorField('img', want.img.shape.slice(1));
const img = makeData({
  type: imgField.type as FixedSizeList<Float32>,
  length: n,
  nullCount: 0,
  child: makeData({
    type: new Float32(),
    length: want.img.values.length,
    nullCount: 0,
    data: Float32Array.from(want.img.values),
  }),
});
const reward = makeData({ type: new Float32(), length: n, nullCount: 0, data: Float32Array.from(want.reward) });
const text = vectorFromArray(want.text, new Utf8()).data[0];
const schema = new Schema([
  new Field('tokens', listType, false),
  new Field('reward', new Float32(), false),
  new Field('text', new Utf8(), false),
  imgField,
]);
const batch = new RecordBatch(
  schema,
  makeData({ type: new Struct(schema.fields), length: n, nullCount: 0, children: [tokens, reward, text, img] }),
);
writeFileSync(new URL('arrow-from-arrowjs.arrows', dir), encodeArrow(new Table([batch])));
console.log('wrote arrow-from-arrowjs.arrows');
