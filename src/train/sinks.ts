/**
 * Experiment sinks: where a run reports besides `metrics.jsonl` (always written: the run directory's
 * record, read back on resume) and TensorBoard. The config's `loggers` adds W&B and MLflow
 * (src/train/python-sinks.ts); any other tracker is an object with `log(step, scalars)` passed as
 * `train(config, { sinks: [...] })` (docs/training.md#experiment-sinks).
 */
import type { TrainConfig } from './config.js';

/** An experiment tracker the trainer reports to. Every method may be async; the trainer waits for it. */
export interface ExperimentSink {
  /**
   * When the run starts (`resumed` false, `step` 0), resumes after `step` completed steps, or restarts
   * from a checkpoint after its sidecar died: a tracker continues its own run there (what it holds
   * after `step` was thrown away by the run too, and is logged again).
   */
  start?(run: { out: string; step: number; resumed: boolean; config: TrainConfig }): void | Promise<void>;
  /** A step's metrics (the `metrics.jsonl` row less `step`), or an evaluation's `eval/...` scalars. */
  log(step: number, scalars: Readonly<Record<string, number>>): void | Promise<void>;
  /** An evaluation's sample table (`eval/samples`): the rows of `<out>/eval/step-NNNNNN.jsonl`. */
  logTable?(step: number, name: string, rows: ReadonlyArray<Readonly<Record<string, unknown>>>): void | Promise<void>;
  /** A PNG written in the run directory under a tag (`samples/gen`: the sample grid). */
  logImage?(step: number, tag: string, path: string): void | Promise<void>;
  /** Once, when train() returns or throws. */
  close?(): void | Promise<void>;
}

/** Fans each report out to every sink, in order. */
export class Sinks {
  constructor(private readonly sinks: readonly ExperimentSink[] = []) {}

  async start(run: Parameters<NonNullable<ExperimentSink['start']>>[0]): Promise<void> {
    for (const s of this.sinks) await s.start?.(run);
  }

  async log(step: number, scalars: Record<string, number>): Promise<void> {
    for (const s of this.sinks) await s.log(step, scalars);
  }

  async table(step: number, name: string, rows: ReadonlyArray<Record<string, unknown>>): Promise<void> {
    for (const s of this.sinks) await s.logTable?.(step, name, rows);
  }

  async image(step: number, tag: string, path: string): Promise<void> {
    for (const s of this.sinks) await s.logImage?.(step, tag, path);
  }

  async close(): Promise<void> {
    for (const s of this.sinks) await s.close?.();
  }
}
