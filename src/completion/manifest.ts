/**
 * Reading U / G manifests (JSONL of UnderstandingRecord / GenerationRecord) into completion items.
 * Every row is checked before any request is made, images included, so a typo in row 9 000 fails
 * the run in the first second instead of after hours of paid calls.
 */
import { constants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { DataError } from '../errors.js';
import { GenerationRecord, UnderstandingRecord } from '../data/schemas.js';
import type { CompletionItem, Direction } from './types.js';

/**
 * Reads a U (`direction` 'u2c') or G ('g2qa') manifest into completion items, checking every row first.
 *
 * @throws DataError naming the file and row of the first bad row (JSON, schema, duplicate id, answer, image).
 */
export async function readCompletionManifest(file: string, direction: Direction): Promise<CompletionItem[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new DataError(`cannot read manifest ${file}: ${(e as Error).message}`, file, undefined, { cause: e });
  }
  const schema = direction === 'u2c' ? UnderstandingRecord : GenerationRecord;
  const kind = direction === 'u2c' ? 'understanding' : 'generation';
  const base = dirname(file);
  const items: CompletionItem[] = [];
  const ids = new Map<string, number>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const row = i + 1;
    const line = lines[i].trim();
    if (!line) continue;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch (e) {
      throw new DataError(`${file}:${row}: not valid JSON (${(e as Error).message})`, file, row);
    }
    const r = schema.safeParse(json);
    if (!r.success) {
      const why = r.error.issues.map((x) => `${x.path.join('.') || 'record'}: ${x.message}`).join('; ');
      throw new DataError(`${file}:${row}: not a valid ${kind} record: ${why}`, file, row);
    }
    const rec = r.data;
    const prev = ids.get(rec.id);
    if (prev !== undefined)
      throw new DataError(`${file}:${row}: duplicate id ${JSON.stringify(rec.id)} (first on row ${prev})`, file, row);
    ids.set(rec.id, row);
    if (direction === 'u2c') {
      const u = rec as UnderstandingRecord;
      if (u.answer.charCodeAt(0) - 65 >= u.choices.length) {
        throw new DataError(
          `${file}:${row}: answer ${u.answer} names no choice (there are ${u.choices.length})`,
          file,
          row,
        );
      }
    }
    const path = isAbsolute(rec.image) ? rec.image : resolve(base, rec.image);
    const source = { file, row };
    items.push(
      direction === 'u2c'
        ? { direction, record: rec as UnderstandingRecord, image: { path }, source }
        : { direction, record: rec as GenerationRecord, image: { path }, source },
    );
  }
  await checkImagesReadable(items);
  return items;
}

async function checkImagesReadable(items: CompletionItem[]): Promise<void> {
  const width = 32;
  for (let i = 0; i < items.length; i += width) {
    await Promise.all(
      items.slice(i, i + width).map(async (it) => {
        const path = 'path' in it.image ? it.image.path : undefined;
        if (!path) return;
        try {
          await access(path, constants.R_OK);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          const what = code === 'ENOENT' ? 'not found' : `not readable (${code})`;
          throw new DataError(
            `${it.source?.file}:${it.source?.row}: image ${path} is ${what}`,
            it.source?.file,
            it.source?.row,
            { cause: e },
          );
        }
      }),
    );
  }
}
