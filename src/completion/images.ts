/**
 * Images sent to vision models as data URLs. The MIME type comes from the bytes (not the file
 * name) because endpoints reject a mislabelled data URL, and manifests often lie about extensions.
 */
import { readFile } from 'node:fs/promises';
import { DataError } from '../errors.js';
import { sha256Hex } from './hash.js';

/** Where an item's image comes from: a file, or bytes already in memory. */
export type ImageSource = { path: string } | { bytes: Uint8Array; mime?: string };

export interface LoadedImage {
  bytes: Uint8Array;
  mime: string;
  sha256: string;
}

export function sniffImageMime(b: Uint8Array): string | undefined {
  const at = (i: number, ...xs: number[]) => xs.every((x, k) => b[i + k] === x);
  if (at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'image/png';
  if (at(0, 0xff, 0xd8, 0xff)) return 'image/jpeg';
  if (at(0, 0x47, 0x49, 0x46, 0x38)) return 'image/gif';
  if (at(0, 0x52, 0x49, 0x46, 0x46) && at(8, 0x57, 0x45, 0x42, 0x50)) return 'image/webp';
  return undefined;
}

/** `where` names the manifest file and row so the error points at the input line to fix. */
export async function loadImage(src: ImageSource, where: { file?: string; row?: number } = {}): Promise<LoadedImage> {
  let bytes: Uint8Array;
  let declared: string | undefined;
  let label: string;
  if ('path' in src) {
    label = src.path;
    try {
      bytes = await readFile(src.path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const what = code === 'ENOENT' ? 'not found' : `unreadable (${code ?? String(e)})`;
      throw new DataError(`${rowLabel(where)}image ${src.path} is ${what}`, where.file, where.row, { cause: e });
    }
  } else {
    label = 'inline image';
    bytes = src.bytes;
    declared = src.mime;
  }
  if (bytes.length === 0) throw new DataError(`${rowLabel(where)}${label} is empty`, where.file, where.row);
  const mime = declared ?? sniffImageMime(bytes);
  if (!mime) {
    throw new DataError(`${rowLabel(where)}${label} is not a PNG, JPEG, GIF or WebP image`, where.file, where.row);
  }
  return { bytes, mime, sha256: sha256Hex(bytes) };
}

export function toDataUrl(img: LoadedImage): string {
  return `data:${img.mime};base64,${Buffer.from(img.bytes.buffer, img.bytes.byteOffset, img.bytes.byteLength).toString('base64')}`;
}

function rowLabel(where: { file?: string; row?: number }): string {
  if (!where.file) return '';
  return where.row !== undefined ? `${where.file}:${where.row}: ` : `${where.file}: `;
}
