/**
 * Evaluation during training (`eval` in the config): the current policy answers the held-out
 * questions once each and draws one image per held-out prompt, with the same seeds at every
 * evaluation so that evaluations differ only by the policy. Understanding accuracy is scored here
 * (the parsed letter), the images by `eval.reward` (any reward source) or else `gen.reward`.
 * Each evaluation writes `<out>/eval/step-NNNNNN.jsonl` (the sample table) and its images under
 * `<out>/eval/step-NNNNNN/`, and returns the `eval/...` scalars the trainer logs.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { familyOptions } from '../contract/families/index.js';
import { GenSampling, UndSampling } from '../contract/ops.js';
import { declaredOf } from '../contract/wire.js';
import { renderQuestion, undReward } from '../grpo/rewards.js';
import type { Sidecar, Tensor } from '../sidecar/index.js';
import { writeFileAtomic } from '../util/atomic.js';
import type { TrainConfig } from './config.js';
import type { TrainPair } from './data.js';
import { encodePng } from './fixtures.js';
import { type RewardContext, scoreSide, sidecarGenInputs } from './reward-sources.js';

/** The evaluation seed: one for every evaluation of a run, apart from any training step's. */
const evalSeed = (seed: number, side: 0 | 1) => (seed * 7919 + 104_729 + side) % 2_147_483_647;

const mean = (a: ArrayLike<number>) => (a.length ? Array.from(a).reduce((x, y) => x + y, 0) / a.length : 0);

/** Whether an evaluation is due after `step` completed steps (step 0, every `eval.every`, the last). */
export function evalDue(cfg: TrainConfig, step: number): boolean {
  return cfg.eval.every > 0 && (step === 0 || step % cfg.eval.every === 0 || step === cfg.steps);
}

/** What one evaluation gives: its `eval/...` scalars and the sample table's rows. */
export interface Evaluation {
  scalars: Record<`eval/${string}`, number>;
  rows: Array<Record<string, unknown>>;
}

/** Evaluates the loaded policy after `step` completed steps (and writes its table and images). */
export async function evaluatePolicy(
  sc: Sidecar,
  cfg: TrainConfig,
  held: readonly TrainPair[],
  step: number,
  sides: { und: boolean; gen: boolean },
  ctx: RewardContext = {},
): Promise<Evaluation> {
  const items = held.slice(0, cfg.eval.samples);
  const name = `step-${String(step).padStart(6, '0')}`;
  const dir = join(cfg.out, 'eval');
  const rows: Array<Record<string, unknown>> = [];
  const out: Record<`eval/${string}`, number> = {};
  if (sides.und) {
    const [u] = await sc.all('train.und_rollout', () => ({
      n: 1,
      items: items.map((p) => ({
        imagePath: p.u_image_abs,
        text: renderQuestion(p.question, p.choices, cfg.und.instruction),
      })),
      sampling: {
        ...declaredOf(UndSampling, cfg.und),
        options: familyOptions(cfg.model.adapter, 'und', cfg.und.options),
        seed: evalSeed(cfg.seed, 0),
        estSeeds: [0],
      },
    }));
    await sc.handles.free({ handles: [u.args.handle] });
    const texts = u.args.texts ?? [];
    const scored = texts.map((t, i) => undReward(t, items[i].answer, cfg.und.formatWeight));
    out['eval/und_acc'] = mean(scored.map((r) => (r.correct ? 1 : 0)));
    texts.forEach((t, i) =>
      rows.push({
        side: 'und',
        pair_id: items[i].pair_id,
        question: items[i].question,
        answer: t,
        correct: scored[i].correct,
      }),
    );
  }
  if (sides.gen) {
    const [g] = await sc.all('train.gen_rollout', () => ({
      n: 1,
      items: items.map((p) => ({ prompt: p.prompt })),
      sampling: {
        ...declaredOf(GenSampling, cfg.gen),
        options: familyOptions(cfg.model.adapter, 'gen', cfg.gen.options),
        seed: evalSeed(cfg.seed, 1),
        estSeeds: [0],
      },
    }));
    try {
      const inputs = sidecarGenInputs(sc, [{ handle: g.args.handle, rank: 0 }], step, items);
      let images: Promise<{ images: Tensor; prompts: string[] }> | undefined;
      const fetchOnce = () => (images ??= inputs.images());
      const r = await scoreSide(cfg.eval.reward ?? cfg.gen.reward, { ...inputs, images: fetchOnce }, ctx);
      out['eval/gen_reward'] = mean(r.total);
      const rc = cfg.eval.reward ?? cfg.gen.reward;
      if ('sum' in rc) for (const [k, v] of Object.entries(r.terms)) out[`eval/gen_reward/${k}`] = mean(v);
      // the table points at each image: they come over once (the scorer may already have fetched them)
      const { images: t } = await fetchOnce();
      const [n, h, w] = t.shape;
      const per = h * w * 3;
      mkdirSync(join(dir, name), { recursive: true });
      for (let i = 0; i < n; i++) {
        const rel = join('eval', name, `${i}.png`);
        writeFileAtomic(join(cfg.out, rel), encodePng(w, h, t.bytes.subarray(i * per, (i + 1) * per)));
        rows.push({ side: 'gen', pair_id: items[i].pair_id, prompt: items[i].prompt, image: rel, reward: r.total[i] });
      }
    } finally {
      await sc.handles.free({ handles: [g.args.handle] }).catch(() => undefined);
    }
  }
  mkdirSync(dir, { recursive: true });
  writeFileAtomic(join(dir, `${name}.jsonl`), rows.map((x) => `${JSON.stringify(x)}\n`).join(''));
  return { scalars: out, rows };
}
