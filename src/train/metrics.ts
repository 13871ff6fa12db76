/**
 * Per-step metrics: `<out>/metrics.jsonl` (one JSON object per completed step) and TensorBoard
 * events in `<out>/tensorboard/`. On resume/restart the JSONL is cut back to the checkpoint's step
 * so re-run steps are not duplicated.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.js';
import { EventWriter } from './tfevents.js';

export type StepMetrics = { step: number } & Record<string, number>;

export class RunLog {
  readonly jsonl: string;
  private tb?: EventWriter;
  private sessions = 0;

  constructor(
    readonly out: string,
    private readonly tensorboard: boolean,
  ) {
    mkdirSync(out, { recursive: true });
    this.jsonl = join(out, 'metrics.jsonl');
  }

  /** Drops rows after `step` (exclusive of nothing: rows with row.step > step go) and opens a new event file. */
  startAt(step: number): void {
    if (existsSync(this.jsonl)) {
      const keep = readFileSync(this.jsonl, 'utf8')
        .split('\n')
        .filter((l) => l.trim())
        .filter((l) => {
          try {
            return (JSON.parse(l) as { step: number }).step <= step;
          } catch {
            return false; // a torn last line from a crash
          }
        });
      writeFileAtomic(this.jsonl, keep.map((l) => `${l}\n`).join(''));
    }
    this.tb?.close();
    if (this.tensorboard) {
      const dir = join(this.out, 'tensorboard');
      mkdirSync(dir, { recursive: true });
      this.tb = new EventWriter(dir, this.sessions++ ? `.${this.sessions}` : '');
    }
  }

  write(m: StepMetrics): void {
    appendFileSync(this.jsonl, `${JSON.stringify(m)}\n`);
    const { step, ...rest } = m;
    this.tb?.scalars(step, rest as Record<string, number>);
  }

  /** Adds a PNG (as written by the sidecar) to TensorBoard's image tab. */
  image(step: number, tag: string, pngPath: string): void {
    if (!this.tb) return;
    const png = readFileSync(pngPath);
    // IHDR: width and height are the big-endian uint32s at bytes 16 and 20.
    this.tb.image(step, tag, { width: png.readUInt32BE(16), height: png.readUInt32BE(20), colorspace: 3, png });
  }

  get eventFile(): string | undefined {
    return this.tb?.path;
  }

  close(): void {
    this.tb?.close();
    this.tb = undefined;
  }
}

/** Reads metrics.jsonl back (tests, resume checks). */
export function readMetrics(out: string): StepMetrics[] {
  const f = join(out, 'metrics.jsonl');
  if (!existsSync(f)) return [];
  return readFileSync(f, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as StepMetrics);
}
