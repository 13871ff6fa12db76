/**
 * Readers for the pairing inputs: an understanding set U (image, question, choices, answer) and a
 * generation set G (image, prompt), from
 *  - JSONL (`.jsonl`, one object per line),
 *  - Arrow IPC files or streams (`.arrow`, `.ipc`, `.feather`),
 *  - Hugging Face `datasets` saved with `save_to_disk` (a directory with state.json listing Arrow
 *    IPC stream shards, plus dataset_info.json),
 *  - Parquet, converted to Arrow IPC by the sidecar (pyarrow) when a converter is given — arrow-js
 *    cannot read Parquet; without one the error says how to convert.
 * Images are paths (relative to the manifest's directory) or inline bytes (a binary column, or the
 * HF `Image` struct {bytes, path}). Every problem is a DataError naming the file and row (1-based
 * line for JSONL, 0-based row for tables): unreadable files, wrong/missing columns, invalid fields,
 * duplicate ids, missing image files; a manifest with no records is a DataError naming the file.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, extname, isAbsolute, join, resolve } from 'node:path';
import { tableFromIPC, Vector, type Table } from 'apache-arrow';
import type { z } from 'zod';
import { DataError } from '../errors.js';
import { GenerationRecord, UnderstandingRecord } from './schemas.js';

/** Where a record's image comes from: a file (absolute path) or bytes inline in the manifest. */
export type ImageSource = { path: string } | { bytes: Uint8Array };

/** One record of a manifest, with its image and where it was read. */
export interface ManifestItem<R> {
  /** The record, validated against its schema (fields read through the `columns` map). */
  record: R;
  /** Where the image bytes come from: an absolute path, or inline bytes. */
  image: ImageSource;
  /** Row number as reported in errors (1-based line for JSONL, 0-based row for tables). */
  row: number;
}

/** A manifest read and validated: its file, the format it was read as, and its records with their images. */
export interface Manifest<R> {
  /** Absolute path of the manifest. */
  file: string;
  /** The format it was read as. */
  format: 'jsonl' | 'arrow' | 'hf' | 'parquet';
  /** Records in file order, each with its image source and row. */
  items: ManifestItem<R>[];
}

/** Map record fields to differently named columns, e.g. `{ choices: 'options', id: 'qid' }`. */
export type ColumnMap = Partial<Record<string, string>>;

/** How `readUnderstanding` / `readGeneration` read a manifest. */
export interface ReadManifestOptions {
  /** Record field → column name, for files whose columns are named otherwise (e.g. `{ id: 'qid' }`). */
  columns?: ColumnMap;
  /** Check that every image path exists (default true). */
  checkImages?: boolean;
  /** Converts a Parquet file to an Arrow IPC file and returns its path (see `sidecarParquetConverter`). */
  parquetToArrow?: (parquetPath: string) => Promise<string>;
}

/**
 * Reads an understanding set U (image, question, choices, answer) from any format above.
 *
 * @throws DataError naming the file and row of the first problem.
 */
export function readUnderstanding(
  path: string,
  opts: ReadManifestOptions = {},
): Promise<Manifest<UnderstandingRecord>> {
  return readManifest(path, UnderstandingRecord, opts);
}

/**
 * Reads a generation set G (image, prompt) from any format above.
 *
 * @throws DataError naming the file and row of the first problem.
 */
export function readGeneration(path: string, opts: ReadManifestOptions = {}): Promise<Manifest<GenerationRecord>> {
  return readManifest(path, GenerationRecord, opts);
}

type RecordSchema = typeof UnderstandingRecord | typeof GenerationRecord;

async function readManifest<S extends RecordSchema>(
  path: string,
  schema: S,
  opts: ReadManifestOptions,
): Promise<Manifest<z.infer<S>>> {
  const file = resolve(path);
  if (!existsSync(file)) throw new DataError(`${file}: no such manifest file or directory`, file);
  const st = statSync(file);
  let rows: Iterable<{ row: number; value: unknown }>;
  let format: Manifest<unknown>['format'];
  let baseDir = dirname(file);
  if (st.isDirectory()) {
    format = 'hf';
    baseDir = file;
    rows = tableRows(readHfDataset(file), file);
  } else {
    const ext = extname(file).toLowerCase();
    if (ext === '.jsonl' || ext === '.ndjson' || ext === '.json') {
      format = 'jsonl';
      rows = jsonlRows(file);
    } else if (ext === '.arrow' || ext === '.ipc' || ext === '.feather') {
      format = 'arrow';
      rows = tableRows(readArrow(file), file);
    } else if (ext === '.parquet') {
      format = 'parquet';
      if (!opts.parquetToArrow) {
        throw new DataError(
          `${file}: Parquet cannot be read by arrow-js. Pass a sidecar (the CLI does) or convert it first: ` +
            `python -c "import pyarrow.parquet as pq, pyarrow.feather as f; f.write_feather(pq.read_table('${basename(file)}'), '${basename(file, ext)}.arrow', compression='uncompressed')"`,
          file,
        );
      }
      rows = tableRows(readArrow(await opts.parquetToArrow(file)), file);
    } else {
      throw new DataError(
        `${file}: unknown manifest format '${ext}' (expected .jsonl, .arrow/.ipc/.feather, .parquet or a saved HF dataset directory)`,
        file,
      );
    }
  }

  const items: ManifestItem<z.infer<S>>[] = [];
  const seen = new Map<string, number>();
  const cols = opts.columns ?? {};
  const fields = Object.keys(schema.shape);
  for (const { row, value } of rows) {
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw new DataError(`${file} row ${row}: expected an object, got ${describe(value)}`, file, row);
    const raw = value as Record<string, unknown>;
    const obj: Record<string, unknown> = {};
    for (const f of fields) {
      const col = cols[f] ?? f;
      const v = raw[col];
      if (v !== undefined && v !== null) obj[f] = f === 'answer' && typeof v === 'number' ? indexToLetter(v) : v;
    }
    let image: ImageSource;
    const img = obj.image;
    if (img instanceof Uint8Array) {
      obj.image = `${basename(file)}#${row}`;
      image = { bytes: img };
    } else if (img && typeof img === 'object' && !Array.isArray(img)) {
      // HF datasets Image feature: {bytes, path}
      const s = img as { bytes?: unknown; path?: unknown };
      if (s.bytes instanceof Uint8Array && s.bytes.length > 0) {
        obj.image = typeof s.path === 'string' && s.path ? s.path : `${basename(file)}#${row}`;
        image = { bytes: s.bytes };
      } else if (typeof s.path === 'string' && s.path) {
        obj.image = s.path;
        image = { path: absolute(baseDir, s.path) };
      } else {
        throw new DataError(`${file} row ${row}: image struct has neither bytes nor path`, file, row);
      }
    } else if (typeof img === 'string') {
      image = { path: absolute(baseDir, img) };
    } else {
      const col = cols.image ?? 'image';
      throw new DataError(
        `${file} row ${row}: missing image (column '${col}'); columns present: ${Object.keys(raw).join(', ')}`,
        file,
        row,
      );
    }
    const parsed = schema.safeParse(obj);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = String(issue.path[0] ?? '');
      const col = cols[field] ?? field;
      const present =
        field && !(col in raw) ? ` (no column '${col}'; columns present: ${Object.keys(raw).join(', ')})` : '';
      throw new DataError(`${file} row ${row}: field '${field}': ${issue.message}${present}`, file, row);
    }
    const rec = parsed.data as z.infer<S>;
    const prev = seen.get(rec.id);
    if (prev !== undefined)
      throw new DataError(`${file} row ${row}: duplicate id '${rec.id}' (first seen at row ${prev})`, file, row);
    seen.set(rec.id, row);
    if ('path' in image && opts.checkImages !== false && !existsSync(image.path)) {
      throw new DataError(`${file} row ${row}: image file not found: ${image.path}`, file, row);
    }
    items.push({ record: rec, image, row });
  }
  if (items.length === 0) {
    const kind = schema === (UnderstandingRecord as RecordSchema) ? 'understanding (U)' : 'generation (G)';
    throw new DataError(`${file}: the ${kind} manifest has no records; pairing needs at least one`, file);
  }
  return { file, format, items };
}

function absolute(base: string, p: string): string {
  return isAbsolute(p) ? p : join(base, p);
}

function indexToLetter(i: number): string {
  return Number.isInteger(i) && i >= 0 && i < 26 ? String.fromCharCode(65 + i) : String(i);
}

function describe(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v;
}

function* jsonlRows(file: string): Iterable<{ row: number; value: unknown }> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new DataError(`${file}: cannot read (${(e as Error).message})`, file, undefined, { cause: e });
  }
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new DataError(`${file} row ${i + 1}: invalid JSON (${(e as Error).message})`, file, i + 1);
    }
    yield { row: i + 1, value };
  }
}

function readArrow(file: string): Table {
  try {
    return tableFromIPC(readFileSync(file));
  } catch (e) {
    throw new DataError(`${file}: not a readable Arrow IPC file or stream (${(e as Error).message})`, file, undefined, {
      cause: e,
    });
  }
}

/** A `datasets.Dataset.save_to_disk` directory: state.json lists the Arrow IPC stream shards. */
function readHfDataset(dir: string): Table[] {
  const state = join(dir, 'state.json');
  if (!existsSync(state)) {
    if (existsSync(join(dir, 'dataset_dict.json'))) {
      throw new DataError(
        `${dir}: this is a DatasetDict; point at one split's directory (e.g. ${join(dir, 'train')})`,
        dir,
      );
    }
    throw new DataError(`${dir}: not a saved Hugging Face dataset (no state.json)`, dir);
  }
  let files: { filename: string }[];
  try {
    files = JSON.parse(readFileSync(state, 'utf8'))._data_files;
  } catch (e) {
    throw new DataError(`${state}: unreadable (${(e as Error).message})`, state, undefined, { cause: e });
  }
  if (!Array.isArray(files) || files.length === 0) throw new DataError(`${state}: lists no _data_files`, state);
  return files.map((f) => readArrow(join(dir, f.filename)));
}

function* tableRows(tables: Table | Table[], file: string): Iterable<{ row: number; value: unknown }> {
  let row = 0;
  for (const t of Array.isArray(tables) ? tables : [tables]) {
    const names = t.schema.fields.map((f) => f.name);
    const cols = names.map((n) => t.getChild(n)!);
    for (let i = 0; i < t.numRows; i++, row++) {
      const obj: Record<string, unknown> = {};
      for (let c = 0; c < names.length; c++) obj[names[c]] = plain(cols[c].get(i));
      yield { row, value: obj };
    }
  }
  void file;
}

/** Arrow values → plain JS (lists → arrays, structs → objects, binary stays Uint8Array). */
function plain(v: unknown): unknown {
  if (v === null || v === undefined || typeof v !== 'object') return typeof v === 'bigint' ? Number(v) : v;
  if (v instanceof Uint8Array) return v;
  if (v instanceof Vector) return Array.from(v, plain);
  const o = v as { toJSON?: () => unknown };
  if (typeof o.toJSON === 'function') {
    const j = o.toJSON() as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(j)) out[k] = plain(x);
    return out;
  }
  return v;
}
