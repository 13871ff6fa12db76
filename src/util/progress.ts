/**
 * A dependency-free progress bar for long jobs. On a TTY it redraws one stderr line (throttled);
 * elsewhere (CI, pipes) it prints a line every `logEveryMs` so logs show the job is alive.
 */
export interface ProgressOptions {
  /** Printed first on each line. */
  label: string;
  /** Units expected; without it no bar or ETA, only a count and rate. */
  total?: number;
  /** Unit name for the count and rate (`images`, `steps`). */
  unit?: string;
  /** Where to draw (default stderr). */
  stream?: NodeJS.WriteStream;
  /** Print nothing at all (tests, or callers that render progress themselves). */
  silent?: boolean;
  /** Interval of the progress lines when not on a TTY (default 10 000 ms). */
  logEveryMs?: number;
}

/** A progress bar or periodic progress line (see {@link ProgressOptions}); call `done()` to finish it. */
export class Progress {
  private done_ = 0;
  private total?: number;
  private readonly start = Date.now();
  private lastDraw = 0;
  private msg = '';
  private finished = false;
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;

  constructor(private readonly opts: ProgressOptions) {
    this.total = opts.total;
    this.stream = opts.stream ?? process.stderr;
    this.tty = Boolean(this.stream.isTTY) && !opts.silent;
  }

  /** Units done so far. */
  get value(): number {
    return this.done_;
  }

  /** Advances by `k` units. */
  tick(k = 1, msg?: string): void {
    this.update(this.done_ + k, undefined, msg);
  }

  /** Sets the absolute count (and total or message when given); draws at most every 100 ms on a TTY. */
  update(done: number, total?: number, msg?: string): void {
    this.done_ = done;
    if (total !== undefined) this.total = total;
    if (msg !== undefined) this.msg = msg;
    const now = Date.now();
    const every = this.tty ? 100 : (this.opts.logEveryMs ?? 10_000);
    if (now - this.lastDraw >= every) {
      this.lastDraw = now;
      this.draw(false);
    }
  }

  /** Draws the final line once; later calls do nothing. */
  done(msg?: string): void {
    if (this.finished) return;
    this.finished = true;
    if (msg !== undefined) this.msg = msg;
    this.draw(true);
  }

  private line(): string {
    const secs = (Date.now() - this.start) / 1000;
    const unit = this.opts.unit ? ` ${this.opts.unit}` : '';
    const rate = secs > 0 ? this.done_ / secs : 0;
    let s = `${this.opts.label} `;
    if (this.total !== undefined && this.total > 0) {
      const frac = Math.min(1, this.done_ / this.total);
      const width = 24;
      const fill = Math.round(frac * width);
      const eta = rate > 0 ? (this.total - this.done_) / rate : NaN;
      s += `[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${this.done_}/${this.total}${unit} ${(frac * 100).toFixed(0)}%`;
      s += ` ${fmt(secs)}${Number.isFinite(eta) && frac < 1 ? ` eta ${fmt(eta)}` : ''}`;
    } else {
      s += `${this.done_}${unit} ${fmt(secs)}`;
    }
    if (rate > 0) s += ` (${rate >= 100 ? rate.toFixed(0) : rate.toFixed(2)}${unit}/s)`;
    if (this.msg) s += ` ${this.msg}`;
    return s;
  }

  private draw(final: boolean): void {
    if (this.opts.silent) return;
    if (this.tty) {
      this.stream.write(`\r\x1b[2K${this.line()}${final ? '\n' : ''}`);
    } else {
      this.stream.write(`${this.line()}\n`);
    }
  }
}

function fmt(secs: number): string {
  if (secs < 60) return `${secs.toFixed(1)}s`;
  const m = Math.floor(secs / 60);
  const s = Math.round(secs % 60);
  if (m < 60) return `${m}m${String(s).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
