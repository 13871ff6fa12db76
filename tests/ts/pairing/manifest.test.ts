/** Manifest readers: JSONL, Arrow IPC (paths and inline bytes), saved HF datasets, Parquet guidance, errors. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Binary, Field, List, Struct, Table, tableToIPC, Utf8, vectorFromArray } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { readGeneration, readUnderstanding } from '../../../src/data/manifest.js';
import { DataError } from '../../../src/errors.js';
import { tinySet, topicImage } from './_data.js';

const catchErr = async (p: Promise<unknown>): Promise<DataError> => {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(DataError);
    return e as DataError;
  }
  throw new Error('expected a DataError');
};

describe('JSONL manifests', () => {
  it('reads records with images resolved against the manifest directory', async () => {
    const s = tinySet(4, 3);
    const u = await readUnderstanding(s.u);
    expect(u.format).toBe('jsonl');
    expect(u.items.length).toBe(4);
    expect(u.items[2].record).toMatchObject({
      id: 'u2',
      question: 'Q2?',
      choices: ['yes', 'no'],
      answer: 'A',
      caption: 'caption 2',
    });
    expect(u.items[2].image).toEqual({ path: join(s.dir, 'img', 'u2.png') });
    expect(u.items[2].row).toBe(3);
    const g = await readGeneration(s.g);
    expect(g.items[1].record).toMatchObject({ id: 'g1', prompt: 'prompt 1', answer: 'B' });
  });

  it('names file, row and field for bad rows, duplicate ids, missing images, wrong columns', async () => {
    const s = tinySet(2, 2);
    const w = (name: string, lines: unknown[]) => {
      const p = join(s.dir, name);
      writeFileSync(p, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n'));
      return p;
    };
    const ok = { id: 'a', image: 'img/u0.png', question: 'q', choices: ['x', 'y'], answer: 'A' };
    let e = await catchErr(readUnderstanding(w('dup.jsonl', [ok, ok])));
    expect(e.message).toMatch(/row 2: duplicate id 'a' \(first seen at row 1\)/);
    expect(e.row).toBe(2);
    expect(e.file).toBe(join(s.dir, 'dup.jsonl'));
    e = await catchErr(readUnderstanding(w('missing.jsonl', [ok, { ...ok, id: 'b', image: 'img/nope.png' }])));
    expect(e.message).toMatch(/row 2: image file not found: .*nope\.png/);
    e = await catchErr(readUnderstanding(w('badjson.jsonl', [ok, '{"id": '])));
    expect(e.message).toMatch(/row 2: invalid JSON/);
    e = await catchErr(readUnderstanding(w('cols.jsonl', [{ ...ok, choices: undefined, options: ['x', 'y'] }])));
    expect(e.message).toMatch(
      /row 1: field 'choices'.*no column 'choices'; columns present: id, image, question, answer, options/,
    );
    // ...and the column map fixes it; integer answers become letters.
    const fixed = await readUnderstanding(
      w('cols2.jsonl', [{ ...ok, choices: undefined, options: ['x', 'y'], answer: 1 }]),
      { columns: { choices: 'options' } },
    );
    expect(fixed.items[0].record).toMatchObject({ choices: ['x', 'y'], answer: 'B' });
    e = await catchErr(readUnderstanding(w('letter.jsonl', [{ ...ok, answer: 'ab' }])));
    expect(e.message).toMatch(/field 'answer'/);
    e = await catchErr(readGeneration(w('noimg.jsonl', [{ id: 'g', prompt: 'p' }])));
    expect(e.message).toMatch(/row 1: missing image \(column 'image'\)/);
    e = await catchErr(readUnderstanding(join(s.dir, 'nothing.jsonl')));
    expect(e.message).toMatch(/no such manifest/);
  });
});

describe('Arrow IPC and HF datasets', () => {
  it('reads an Arrow IPC file with inline image bytes', async () => {
    const s = tinySet(1, 1);
    const img = topicImage(1, 5);
    const t = new Table({
      id: vectorFromArray(['g0', 'g1'], new Utf8()),
      image: vectorFromArray([new Uint8Array(img), new Uint8Array(img)], new Binary()),
      prompt: vectorFromArray(['p0', 'p1'], new Utf8()),
    });
    const p = join(s.dir, 'g.arrow');
    writeFileSync(p, tableToIPC(t, 'file'));
    const g = await readGeneration(p);
    expect(g.format).toBe('arrow');
    expect(g.items.map((i) => i.record.id)).toEqual(['g0', 'g1']);
    expect('bytes' in g.items[1].image && Buffer.from(g.items[1].image.bytes).equals(img)).toBe(true);
    expect(g.items[1].record.image).toBe('g.arrow#1');
  });

  it('reads a save_to_disk directory (state.json + stream shards, Image struct, list columns)', async () => {
    const s = tinySet(1, 1);
    const dir = join(s.dir, 'hf');
    mkdirSync(dir);
    const imgType = new Struct([new Field('bytes', new Binary(), true), new Field('path', new Utf8(), true)]);
    const shard = (ids: string[], off: number) =>
      new Table({
        id: vectorFromArray(ids, new Utf8()),
        image: vectorFromArray(
          ids.map((_, i) => ({ bytes: new Uint8Array(topicImage(0, off + i)), path: `orig_${off + i}.png` })),
          imgType,
        ),
        question: vectorFromArray(
          ids.map(() => 'what?'),
          new Utf8(),
        ),
        options: vectorFromArray(
          ids.map(() => ['a', 'b', 'c']),
          new List(new Field('item', new Utf8(), true)),
        ),
        answer: vectorFromArray(
          ids.map(() => 'C'),
          new Utf8(),
        ),
      });
    writeFileSync(join(dir, 'data-00000-of-00002.arrow'), tableToIPC(shard(['x0', 'x1'], 0), 'stream'));
    writeFileSync(join(dir, 'data-00001-of-00002.arrow'), tableToIPC(shard(['x2'], 2), 'stream'));
    writeFileSync(join(dir, 'dataset_info.json'), '{}');
    writeFileSync(
      join(dir, 'state.json'),
      JSON.stringify({
        _data_files: [{ filename: 'data-00000-of-00002.arrow' }, { filename: 'data-00001-of-00002.arrow' }],
      }),
    );
    const u = await readUnderstanding(dir, { columns: { choices: 'options' } });
    expect(u.format).toBe('hf');
    expect(u.items.map((i) => [i.record.id, i.row, i.record.image])).toEqual([
      ['x0', 0, 'orig_0.png'],
      ['x1', 1, 'orig_1.png'],
      ['x2', 2, 'orig_2.png'],
    ]);
    expect(u.items[2].record.choices).toEqual(['a', 'b', 'c']);
    expect('bytes' in u.items[0].image).toBe(true);
    const e = await catchErr(readUnderstanding(s.dir + '/img'));
    expect(e.message).toMatch(/not a saved Hugging Face dataset/);
  });

  it('Parquet without a converter explains how to convert', async () => {
    const s = tinySet(1, 1);
    writeFileSync(join(s.dir, 'u.parquet'), 'PAR1');
    const e = await catchErr(readUnderstanding(join(s.dir, 'u.parquet')));
    expect(e.message).toMatch(/Parquet cannot be read by arrow-js.*write_feather/);
  });
});

describe('empty manifests', () => {
  it('a U or G manifest with no records is a DataError naming the file (JSONL, Arrow, HF)', async () => {
    const s = tinySet(1, 1);
    const empty = join(s.dir, 'empty.jsonl');
    writeFileSync(empty, '');
    let e = await catchErr(readUnderstanding(empty));
    expect(e.message).toBe(`${empty}: the understanding (U) manifest has no records; pairing needs at least one`);
    expect(e.file).toBe(empty);
    const blank = join(s.dir, 'blank.jsonl');
    writeFileSync(blank, '\n  \n\n');
    e = await catchErr(readGeneration(blank));
    expect(e.message).toBe(`${blank}: the generation (G) manifest has no records; pairing needs at least one`);
    expect(e.file).toBe(blank);
    const arrow = join(s.dir, 'g.arrow');
    writeFileSync(
      arrow,
      tableToIPC(
        new Table({
          id: vectorFromArray([], new Utf8()),
          image: vectorFromArray([], new Utf8()),
          prompt: vectorFromArray([], new Utf8()),
        }),
        'file',
      ),
    );
    e = await catchErr(readGeneration(arrow));
    expect(e.message).toMatch(/g\.arrow: the generation \(G\) manifest has no records/);
    const hf = join(s.dir, 'hf');
    mkdirSync(hf);
    writeFileSync(
      join(hf, 'data-00000-of-00001.arrow'),
      tableToIPC(new Table({ id: vectorFromArray([], new Utf8()), image: vectorFromArray([], new Utf8()) }), 'stream'),
    );
    writeFileSync(join(hf, 'state.json'), JSON.stringify({ _data_files: [{ filename: 'data-00000-of-00001.arrow' }] }));
    e = await catchErr(readUnderstanding(hf));
    expect(e.message).toBe(`${hf}: the understanding (U) manifest has no records; pairing needs at least one`);
  });
});
