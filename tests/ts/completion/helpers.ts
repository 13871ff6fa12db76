/** Shared fixtures: a routing script for the scripted server, items, config, instant sleep. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type {
  CompleterConfigInput,
  CompletionItem,
  CompletionSleep as Sleep,
  ScriptedReply,
  ScriptedRequest,
} from '../../../src/completion/index.js';

export const MODELS = { u2c: 'gen-u', g2qa: 'gen-g', verifyU2c: 'chk-u', verifyG2qa: 'chk-g' } as const;

/** Distinct "PNG" bytes per seed: the magic number is all the completer looks at. */
export function png(seed: string): Uint8Array {
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.from(seed)]);
}

export function uItem(id: string, extra: Partial<{ caption: string }> = {}): CompletionItem {
  return {
    direction: 'u2c',
    record: {
      id,
      image: `${id}.png`,
      question: `How many cats sit on the sofa? [${id}]`,
      choices: ['one', 'two', 'three', 'four'],
      answer: 'B',
      ...extra,
    },
    image: { bytes: png(id) },
  };
}

export function gItem(id: string, category = 'two object'): CompletionItem {
  return {
    direction: 'g2qa',
    record: {
      id,
      image: `${id}.png`,
      prompt: `A red apple to the left of a blue mug on a wooden table [${id}]`,
      category,
    },
    image: { bytes: png(id) },
  };
}

export const VALID_U = JSON.stringify({
  facts: ['two cats on the sofa'],
  prompt:
    'Two tabby cats curled up side by side on a green velvet sofa in a sunny living room, a striped cushion behind them and a wooden floor below',
});
export const VALID_G = JSON.stringify({
  question: 'Where is the red apple relative to the mug, and what colour is the mug?',
  choices: { A: 'Left of it; blue', B: 'Right of it; blue', C: 'Left of it; green', D: 'On top of it; blue' },
  answer: 'A',
});
export const OK = JSON.stringify({ verdict: 'consistent', problems: [] });
export const BAD = (why: string) => JSON.stringify({ verdict: 'inconsistent', problems: [why] });

export function itemIdOf(req: ScriptedRequest): string {
  const m = /\[([ug]\d+)\]/.exec(req.text);
  return m ? m[1] : '?';
}

/**
 * Answers each request from a per-(item, model) queue; an empty queue gives a valid reply.
 * Keys look like 'u1/gen-u' or 'g2/chk-g'.
 */
export function router(script: Record<string, ScriptedReply[]> = {}) {
  const calls = new Map<string, number>();
  const handler = (req: ScriptedRequest): ScriptedReply => {
    const key = `${itemIdOf(req)}/${req.model}`;
    calls.set(key, (calls.get(key) ?? 0) + 1);
    const q = script[key];
    if (q && q.length) return q.shift()!;
    // Later drafts of an item differ, as they would from a sampling model.
    const n = calls.get(key)!;
    if (req.model === MODELS.u2c) return { content: n === 1 ? VALID_U : VALID_U.replace('below', `below, take ${n}`) };
    if (req.model === MODELS.g2qa)
      return { content: n === 1 ? VALID_G : VALID_G.replace('and what', `and (take ${n}) what`) };
    return { content: OK };
  };
  return { handler, calls };
}

export function config(url: string, over: Partial<CompleterConfigInput> = {}): CompleterConfigInput {
  return {
    baseURL: url,
    apiKey: 'test-key',
    models: { ...MODELS },
    concurrency: 2,
    timeoutMs: 60_000, // far above any scripted delay below it: a busy machine must not turn a reply into a timeout
    retry: { maxRetries: 3, baseDelayMs: 100, maxDelayMs: 1_000, jitter: false },
    maxFormatRetries: 2,
    maxRegenerations: 2,
    pricing: { default: { inputPerMTok: 2, outputPerMTok: 8 } },
    ...over,
  };
}

/** Records requested pauses and returns at once (still honouring abort). */
export function instantSleep(): { sleep: Sleep; delays: number[] } {
  const delays: number[] = [];
  return {
    delays,
    sleep: async (ms, signal) => {
      delays.push(ms);
      if (signal.aborted) throw signal.reason;
    },
  };
}

export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'pairuni-completion-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}
