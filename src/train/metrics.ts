/**
 * Per-step metrics: `<out>/metrics.jsonl` (one JSON object per completed step) and TensorBoard
 * events in `<out>/tensorboard/`. On resume/restart everything logged after the checkpoint's step
 * is discarded: the JSONL rows and sample grids are removed, and a new event file opens with a
 * SessionLog START so TensorBoard drops the old files' events from that step on.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.js';
import { EventWriter } from './tfevents.js';

/** The keys of every step, PairGRPO or supervised (docs/metrics.md). */
export interface CommonStepMetrics {
  /** Completed steps, counting from 1. */
  step: number;
  /** The pass over the PairUG file (from 0) that the step's pairs are drawn from. */
  epoch: number;
  /** What was back-propagated. */
  loss: number;
  /** Global L2 gradient norm before clipping. */
  grad_norm: number;
  lr: number;
  /** Seconds inside the update op(s). */
  'time/update': number;
  /** Wall seconds of the whole step in the controller. */
  'time/step': number;
}

/** One PairGRPO step (`pairGrpoStep`); meanings and units in docs/metrics.md. */
/** Each term of a weighted-sum reward (`und.reward.sum` / `gen.reward.sum` keys), before weighting: `gen/reward/hps`. */
export type RewardTermMetrics = Partial<Record<`${'und' | 'gen'}/reward/${string}`, number>>;

export interface PairGrpoStepMetrics extends CommonStepMetrics {
  'und/reward': number;
  'und/reward_std': number;
  'und/acc': number;
  'und/format': number;
  'und/len_mean': number;
  'und/zero_groups': number;
  'gen/reward': number;
  'gen/reward_std': number;
  'gen/zero_groups': number;
  'adv/und_mean_abs': number;
  'adv/gen_mean_abs': number;
  'adv/und_max_abs': number;
  'adv/gen_max_abs': number;
  'wp/mean': number;
  'wp/min': number;
  'wp/max': number;
  'wp/retrieved_frac': number;
  'und/clip_frac': number;
  'gen/clip_frac': number;
  'und/ratio_mean': number;
  'gen/ratio_mean': number;
  'kl/old': number;
  /** Only when `loss.beta` > 0. */
  'kl/ref'?: number;
  /** Only with `log.gradCosine`. */
  grad_cos?: number;
  'tokens/rollout': number;
  'tokens/update': number;
  tokens_per_s: number;
  'time/rollout': number;
  'time/reward': number;
  'time/transport': number;
}

/** One supervised step (a family without PairGRPO capabilities); the per-term losses its family reports. */
export interface SftStepMetrics extends CommonStepMetrics {
  /** Janus / DiMOO: mean token cross-entropy per side. */
  'und/sft_loss'?: number;
  'gen/sft_loss'?: number;
  /** Bagel: answer-token cross-entropy and flow-matching MSE (unweighted). */
  ce?: number;
  mse?: number;
}

/**
 * One row of `metrics.jsonl`, as `onStep` and `readMetrics` give it: the common keys always, the
 * PairGRPO keys in a PairGRPO run, the SFT keys in a supervised one. A key not listed fails to compile.
 */
export type StepMetrics = CommonStepMetrics & Partial<Omit<PairGrpoStepMetrics, keyof CommonStepMetrics>> & Partial<Omit<SftStepMetrics, keyof CommonStepMetrics>>;

export class RunLog {
  readonly jsonl: string;
  private tb?: EventWriter;

  constructor(
    readonly out: string,
    private readonly tensorboard: boolean,
  ) {
    mkdirSync(out, { recursive: true });
    this.jsonl = join(out, 'metrics.jsonl');
  }

  /**
   * (Re)starts logging after `step` completed steps (the restored checkpoint's; 0 for a new run):
   * drops metrics.jsonl rows with row.step > step and sample grids of those steps, and opens a new
   * event file (sorted after the existing ones) that starts with a SessionLog START at step + 1, so
   * TensorBoard discards the steps the restart threw away even if the run never gets back to them.
   */
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
    const evals = join(this.out, 'eval.jsonl');
    if (existsSync(evals)) writeFileAtomic(evals, readEvals(this.out).filter((r) => r.step <= step).map((r) => `${JSON.stringify(r)}\n`).join(''));
    const tables = join(this.out, 'eval');
    if (existsSync(tables)) {
      for (const n of readdirSync(tables)) {
        const m = /^step-(\d+)(?:\.jsonl)?$/.exec(n);
        if (m && Number(m[1]) > step) rmSync(join(tables, n), { recursive: true, force: true });
      }
    }
    const samples = join(this.out, 'samples');
    if (existsSync(samples)) {
      for (const n of readdirSync(samples)) {
        const m = /^step-(\d+)\.png$/.exec(n);
        if (m && Number(m[1]) > step) rmSync(join(samples, n), { force: true });
      }
    }
    this.tb?.close();
    this.tb = undefined;
    if (this.tensorboard) {
      const dir = join(this.out, 'tensorboard');
      mkdirSync(dir, { recursive: true });
      this.tb = new EventWriter(dir);
      this.tb.sessionStart(step + 1, `pairuni train: ${step ? `resumed after step ${step}` : 'started'}`);
    }
  }

  write(m: StepMetrics): void {
    appendFileSync(this.jsonl, `${JSON.stringify(m)}\n`);
    const { step, ...rest } = m;
    this.tb?.scalars(step, rest as Record<string, number>);
  }

  /** One evaluation's scalars (`eval/...`) after `step` completed steps: a row of eval.jsonl and TensorBoard scalars. */
  evaluation(step: number, scalars: Record<string, number>): void {
    appendFileSync(join(this.out, 'eval.jsonl'), `${JSON.stringify({ step, ...scalars })}\n`);
    this.tb?.scalars(step, scalars);
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

/** One row of `<out>/eval.jsonl`: an evaluation after `step` completed steps (docs/metrics.md). */
export type EvalRow = { step: number } & Record<`eval/${string}`, number>;

/** Reads eval.jsonl back (a torn last line from a crash is left out). */
export function readEvals(out: string): EvalRow[] {
  const f = join(out, 'eval.jsonl');
  if (!existsSync(f)) return [];
  return readFileSync(f, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as EvalRow];
      } catch {
        return [];
      }
    });
}
