/**
 * Writing the results of a run: completed manifests (same record schemas, completion fields
 * filled, image paths re-based onto the output directory), a rejections file and the report.
 * Each file is written to a temporary name, fsync'd and renamed, so a reader (or a kill) sees
 * either the previous complete file or the new complete file.
 */
import { mkdir } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import type { CompletionReport } from './report.js';
import type { CompletionResult, Direction } from './types.js';

/** Where a completion run's outputs go inside its output folder. */
export interface CompletionOutputPaths {
  /** Completed understanding manifest. */
  u: string;
  /** Completed generation manifest. */
  g: string;
  /** One line per rejected item. */
  rejections: string;
  /** The run's {@link CompletionReport}. */
  report: string;
}

/** The output files of a run into `outDir`: u.completed.jsonl, g.completed.jsonl, rejections.jsonl, report.json. */
export function completionOutputPaths(outDir: string): CompletionOutputPaths {
  return {
    u: join(outDir, 'u.completed.jsonl'),
    g: join(outDir, 'g.completed.jsonl'),
    rejections: join(outDir, 'rejections.jsonl'),
    report: join(outDir, 'report.json'),
  };
}

/** One line of rejections.jsonl: a rejected item, why, and where it came from. */
export interface RejectionRow {
  /** Which completion the item needed. */
  direction: Direction;
  /** The record's id. */
  id: string;
  /** Why it was rejected (a {@link CompletionRejectReason}). */
  reason: string;
  /** What exactly went wrong. */
  detail: string;
  /** The manifest it came from. */
  file?: string;
  /** Its 1-based line there. */
  row?: number;
}

/**
 * `directions` lists the manifests that were inputs; only those completed manifests are written.
 * Results are written in input order whatever order they finished in.
 */
export async function writeCompletionOutputs(
  outDir: string,
  results: CompletionResult[],
  report: CompletionReport,
  directions: Direction[],
): Promise<CompletionOutputPaths> {
  const paths = completionOutputPaths(outDir);
  await mkdir(outDir, { recursive: true });
  const sorted = [...results].sort((a, b) => a.index - b.index);
  for (const d of directions) {
    const rows = sorted
      .filter((r) => r.direction === d && r.status === 'accepted')
      .map((r) => {
        const rec = (r as Extract<CompletionResult, { status: 'accepted' }>).record;
        return { ...rec, image: rebaseImage(rec.image, r.source?.file, outDir) };
      });
    writeFileAtomic(d === 'u2c' ? paths.u : paths.g, rows.map((x) => `${JSON.stringify(x)}\n`).join(''));
  }
  const rejections: RejectionRow[] = sorted
    .filter((r): r is Extract<CompletionResult, { status: 'rejected' }> => r.status === 'rejected')
    .map((r) => ({ direction: r.direction, id: r.id, reason: r.reason, detail: r.detail, ...(r.source ?? {}) }));
  writeFileAtomic(paths.rejections, rejections.map((x) => `${JSON.stringify(x)}\n`).join(''));
  const unfinished = sorted
    .filter((r): r is Extract<CompletionResult, { status: 'unfinished' }> => r.status === 'unfinished')
    .slice(0, 1000)
    .map((r) => ({ direction: r.direction, id: r.id, reason: r.reason, detail: r.detail }));
  writeJsonAtomic(paths.report, { ...report, unfinished }, 2);
  return paths;
}

/** Image paths in manifests are relative to the manifest; the output manifest lives elsewhere. */
function rebaseImage(image: string, manifest: string | undefined, outDir: string): string {
  if (!manifest || isAbsolute(image)) return image;
  const abs = resolve(dirname(manifest), image);
  return relative(resolve(outDir), abs).split(sep).join('/');
}
