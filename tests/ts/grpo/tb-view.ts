/**
 * What TensorBoard shows for a run's `tensorboard/` directory, computed the way its event
 * accumulator does for `brain.Event:2` files: files in name order, events in file order, and a
 * SessionLog START at step s drops every event read so far with step >= s ("orphaned data" purge).
 * Re-logged steps are NOT merged: without a START, both the old and the new value stay (the chart
 * zig-zags), which is what the accumulator does with file_version 2 files.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeEvent, readRecords, SESSION_STATUS } from '../../../src/train/tfevents.js';
import type { StepMetrics } from '../../../src/train/metrics.js';

export function tensorboardScalars(dir: string): Map<string, Array<[number, number]>> {
  const series = new Map<string, Array<[number, number]>>();
  for (const f of readdirSync(dir)
    .filter((n) => n.startsWith('events.out.tfevents.'))
    .sort()) {
    for (const rec of readRecords(readFileSync(join(dir, f)))) {
      const e = decodeEvent(rec);
      if (e.sessionLog?.status === SESSION_STATUS.start) {
        for (const [tag, pts] of series)
          series.set(
            tag,
            pts.filter(([s]) => s < (e.step ?? 0)),
          );
        continue;
      }
      for (const v of e.summary ?? []) {
        if (!('simpleValue' in v)) continue;
        if (!series.has(v.tag)) series.set(v.tag, []);
        series.get(v.tag)!.push([e.step ?? 0, v.simpleValue]);
      }
    }
  }
  return series;
}

/** metrics.jsonl rows as TensorBoard should show them (finite values, as float32). */
export function expectedScalars(rows: StepMetrics[]): Map<string, Array<[number, number]>> {
  const series = new Map<string, Array<[number, number]>>();
  for (const r of rows) {
    for (const [tag, v] of Object.entries(r)) {
      if (tag === 'step' || typeof v !== 'number' || !Number.isFinite(v)) continue;
      if (!series.has(tag)) series.set(tag, []);
      series.get(tag)!.push([r.step, Math.fround(v)]);
    }
  }
  return series;
}
