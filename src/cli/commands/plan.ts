/**
 * `pairuni plan --family dimoo --preset Lumina-DiMOO --ranks 8 --gpu-gib 80 --k 2 --beta 0`: per-rank
 * GPU memory of a training configuration, from the real architecture built on the meta device (no
 * weights, no GPU needed), whether it fits and the cheapest listed change that makes it fit.
 *
 * Exit codes: 0 fits, 3 does not fit (the table still prints, with the change that fits or the verdict
 * that none does), 2 bad input (one line naming the option), 1 another error.
 */
import { parseArgs } from 'node:util';
import { BadRequestError, ConfigError } from '../../errors.js';
import type { OpArgs, PlanReply } from '../../contract/ops.js';
import { Sidecar } from '../../sidecar/index.js';
import { intOpt, numOpt, userPath } from '../options.js';

export const summary = 'per-rank GPU memory of a training configuration (meta device), whether it fits, what to change';

/** Exit status of a plan that does not fit. */
export const NO_FIT_EXIT = 3;

const HELP = `usage: pairuni plan --family janus|dimoo|bagel (--preset NAME | --model DIR) [options]

  --family F           janus | dimoo | bagel
  --preset NAME        Janus-Pro-1B | Janus-Pro-7B | Lumina-DiMOO | BAGEL-7B-MoT (configs typed in from the published ones)
  --model DIR          a model directory instead (its config files only; no weights are read)
  --ranks N            GPUs (FSDP2 ranks), default 1
  --gpu-gib G          memory of one GPU in GiB, default 80 (10% of it is kept free)
  --train-modules A,B  trained module groups, default language_model
  --lora-rank R        LoRA rank (0: full fine-tuning), default 0
  --beta B             KL weight; > 0 plans a bf16 reference model, default 0
  --micro-batch N      trajectories per backward, default 1
  --k N                rollouts per prompt, default 4
  --text-tokens N      prompt + answer tokens, default 256
  --image-tokens N     tokens of one image (default: the model's: Janus 576, DiMOO/Bagel 1024 at 512 px)
  --no-checkpointing   activation checkpointing off (on by default)
  --cpu-offload        FSDP2 CPU offload of parameter, gradient and optimizer shards
  --precision P        bf16-mixed (GPU, default) | fp32 (the CPU discipline)
  --mode M             rl | sft (default: sft for bagel, rl otherwise)
  --json               the plan as JSON
  -h, --help           this text

Exit codes: 0 fits, ${NO_FIT_EXIT} does not fit, 2 bad input, 1 other errors.`;

const ROWS: Array<[keyof PlanReply['bytes'], string]> = [
  ['parameters', 'parameters (fp32 master + frozen)'],
  ['gradients', 'gradients (fp32)'],
  ['optimizer', 'optimizer (AdamW moments)'],
  ['reference', 'reference model'],
  ['activations', 'activations (one micro-batch)'],
  ['fsdpBuffers', 'FSDP gathered units'],
  ['updatePeak', '= update peak'],
  ['gatheredWeights', 'full weights for rollouts'],
  ['rollout', 'rollout buffers'],
  ['rolloutPeak', '= rollout peak'],
  ['total', 'TOTAL per rank'],
];

const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

/** The plan as the table `pairuni plan` prints (also used by docs/plan.md). */
export function planTable(p: PlanReply): string {
  const r = p.request as Record<string, unknown>;
  const what = p.preset ?? p.modelDir;
  const lines = [
    `${p.family} ${what}: ${(p.counts.params / 1e9).toFixed(3)} B parameters, ${(p.counts.trainable / 1e9).toFixed(3)} B trained (${p.mode})`,
    `  ranks ${r.ranks}, ${r.gpu_gib} GiB/GPU, ${p.mode === 'rl' ? `K ${r.k}, beta ${r.beta}, ` : ''}micro-batch ${r.micro_batch}, LoRA ${r.lora_rank}, ` +
      `checkpointing ${r.checkpointing ? 'on' : 'off'}, offload ${r.cpu_offload ? 'on' : 'off'}, ${r.precision}, ` +
      `${r.text_tokens} text + ${p.imageTokens} image tokens`,
  ];
  for (const [k, label] of ROWS) {
    if ((k === 'gatheredWeights' || k === 'rollout' || k === 'rolloutPeak') && p.mode === 'sft') continue;
    lines.push(`  ${label.padEnd(36)} ${gib(p.bytes[k]).padStart(12)}`);
  }
  if (p.bytes.host > 0) lines.push(`  ${'host memory (offloaded)'.padEnd(36)} ${gib(p.bytes.host).padStart(12)}`);
  lines.push(`  ${'usable per GPU'.padEnd(36)} ${gib(p.usable).padStart(12)}`);
  lines.push(
    p.fits
      ? 'fits'
      : p.suggestion
        ? `does not fit; fits with: ${p.suggestion.change} (${gib(p.suggestion.total)})`
        : 'does not fit: nothing listed fits',
  );
  return lines.join('\n');
}

export function planArgs(v: Record<string, unknown>): OpArgs<'plan'> {
  const family = String(v.family ?? '');
  if (!['janus', 'dimoo', 'bagel'].includes(family))
    throw new ConfigError(`--family must be janus, dimoo or bagel, got '${family}'`);
  if ((v.preset === undefined) === (v.model === undefined))
    throw new ConfigError('give exactly one of --preset and --model');
  const a: Record<string, unknown> = { family };
  if (v.preset !== undefined) a.preset = String(v.preset);
  if (v.model !== undefined) a.modelDir = userPath(String(v.model));
  if (v.ranks !== undefined) a.ranks = intOpt(v.ranks, '--ranks', { min: 1, max: 65536 });
  if (v['gpu-gib'] !== undefined) a.gpuGib = numOpt(v['gpu-gib'], '--gpu-gib', { gt: 0, max: 1e6 });
  if (v['train-modules'] !== undefined)
    a.trainModules = String(v['train-modules'])
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  if (v['lora-rank'] !== undefined) a.loraRank = intOpt(v['lora-rank'], '--lora-rank', { min: 0, max: 65536 });
  if (v.beta !== undefined) a.beta = numOpt(v.beta, '--beta', { min: 0 });
  if (v['micro-batch'] !== undefined) a.microBatch = intOpt(v['micro-batch'], '--micro-batch', { min: 1 });
  if (v.k !== undefined) a.k = intOpt(v.k, '--k', { min: 1 });
  if (v['text-tokens'] !== undefined) a.textTokens = intOpt(v['text-tokens'], '--text-tokens', { min: 1 });
  if (v['image-tokens'] !== undefined) a.imageTokens = intOpt(v['image-tokens'], '--image-tokens', { min: 1 });
  if (v['no-checkpointing']) a.checkpointing = false;
  if (v['cpu-offload']) a.cpuOffload = true;
  if (v.precision !== undefined) {
    if (v.precision !== 'bf16-mixed' && v.precision !== 'fp32')
      throw new ConfigError(`--precision must be bf16-mixed or fp32, got '${v.precision}'`);
    a.precision = v.precision;
  }
  if (v.mode !== undefined) {
    if (v.mode !== 'rl' && v.mode !== 'sft') throw new ConfigError(`--mode must be rl or sft, got '${v.mode}'`);
    a.mode = v.mode;
  }
  return a as OpArgs<'plan'>;
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      family: { type: 'string' },
      preset: { type: 'string' },
      model: { type: 'string' },
      ranks: { type: 'string' },
      'gpu-gib': { type: 'string' },
      'train-modules': { type: 'string' },
      'lora-rank': { type: 'string' },
      beta: { type: 'string' },
      'micro-batch': { type: 'string' },
      k: { type: 'string' },
      'text-tokens': { type: 'string' },
      'image-tokens': { type: 'string' },
      'no-checkpointing': { type: 'boolean', default: false },
      'cpu-offload': { type: 'boolean', default: false },
      precision: { type: 'string' },
      mode: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  let p: PlanReply;
  try {
    const args = planArgs(values);
    const sc = await Sidecar.spawn({ threads: 1 });
    try {
      p = (await sc.plan(args)).args;
    } finally {
      await sc.close();
    }
  } catch (e) {
    // Bad input, whether the CLI or the sidecar found it: one line, exit 2
    if (e instanceof ConfigError || e instanceof BadRequestError) {
      console.error(`pairuni plan: ${e.message.replace(/^plan: /, '')}`);
      return 2;
    }
    throw e;
  }
  console.log(values.json ? JSON.stringify(p, null, 2) : planTable(p));
  return p.fits ? 0 : NO_FIT_EXIT;
}
