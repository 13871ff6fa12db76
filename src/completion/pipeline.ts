/**
 * Generate-then-check for one item (paper §2.1.1): draft the missing part, validate it (re-asking
 * with the validation error up to `maxFormatRetries` times), have a checker compare it with the
 * source, and on a contradiction draft again with the objections, up to `maxRegenerations` times.
 *
 * Every message depends only on the input and on earlier replies, so the same item always issues
 * the same sequence of requests; that is what lets the call journal replay a half-done item. (A
 * regenerated draft identical to a rejected one gets the same check request, so its verdict is
 * replayed rather than paid for twice.)
 */
import type { GenerationRecord, UnderstandingRecord } from '../data/schemas.js';
import type { ItemOutcome } from './cache.js';
import type { CallContext, ChatClient } from './chat-client.js';
import type { CompleterConfig } from './config.js';
import type { LoadedImage } from './images.js';
import { canonicalJson } from './hash.js';
import { g2qaFill, parseCheckReply, parseG2qaReply, parseU2cReply, type CheckReply, type Parsed } from './replies.js';
import {
  formatFeedback,
  g2qaCheck,
  g2qaGenerate,
  u2cCheck,
  u2cGenerate,
  type ChatMessage,
  type Redo,
} from './templates.js';
import type { G2qaFill, ItemStats, RejectReason, U2cFill } from './types.js';

type Ask<T> = { ok: true; value: T } | { ok: false; refused: boolean; detail: string };

export type PipelineInput =
  | { direction: 'u2c'; record: UnderstandingRecord; image: LoadedImage }
  | { direction: 'g2qa'; record: GenerationRecord; image: LoadedImage | undefined };

export async function completeItem(
  input: PipelineInput,
  client: ChatClient,
  config: CompleterConfig,
  ctx: CallContext,
): Promise<ItemOutcome> {
  const stats: ItemStats = { calls: 0, replayedCalls: 0, formatRetries: 0, regenerations: 0 };
  const limits = { maxFormatRetries: config.maxFormatRetries, maxRegenerations: config.maxRegenerations };

  const ask = async <T>(
    model: string,
    messages: ChatMessage[],
    parse: (text: string) => Parsed<T>,
  ): Promise<Ask<T>> => {
    const convo = [...messages];
    for (let attempt = 0; ; attempt++) {
      const r = await client.call(model, convo, ctx);
      stats.calls++;
      if (r.replayed) stats.replayedCalls++;
      if (r.refusal !== null) return { ok: false, refused: true, detail: `refused: ${r.refusal}` };
      if (r.finish === 'content_filter') return { ok: false, refused: true, detail: 'blocked by the content filter' };
      const text = r.text ?? '';
      let p = text.trim() ? parse(text) : ({ ok: false, error: 'the reply is empty' } as const);
      if (!p.ok && r.finish === 'length')
        p = { ok: false, error: `${p.error} (the reply was cut off at the token limit; be shorter)` };
      if (p.ok) return { ok: true, value: p.value };
      if (attempt >= config.maxFormatRetries) {
        return { ok: false, refused: false, detail: `${p.error} (after ${attempt + 1} attempts)` };
      }
      stats.formatRetries++;
      convo.push({ role: 'assistant', content: text }, { role: 'user', content: formatFeedback(p.error) });
    }
  };

  const reject = (reason: RejectReason, detail: string): ItemOutcome => ({
    status: 'rejected',
    reason,
    detail,
    stats,
    limits,
  });
  const models = config.models;

  const redo: Redo = [];
  for (let round = 0; ; round++) {
    let fill: U2cFill | G2qaFill;
    let draft: string;
    let check: Ask<CheckReply>;
    if (input.direction === 'u2c') {
      const gen = await ask(models.u2c, u2cGenerate(input.record, input.image, config.promptWords, redo), (t) =>
        parseU2cReply(t, config.promptWords),
      );
      if (!gen.ok) return reject(gen.refused ? 'refusal' : 'invalid_output', gen.detail);
      fill = { caption: gen.value.prompt.trim() };
      draft = canonicalJson(gen.value);
      check = await ask(
        models.verifyU2c ?? models.u2c,
        u2cCheck(input.record, input.image, fill.caption),
        parseCheckReply,
      );
    } else {
      const gen = await ask(models.g2qa, g2qaGenerate(input.record, input.image, redo), parseG2qaReply);
      if (!gen.ok) return reject(gen.refused ? 'refusal' : 'invalid_output', gen.detail);
      const qa = g2qaFill(gen.value);
      fill = qa;
      draft = canonicalJson(gen.value);
      check = await ask(models.verifyG2qa ?? models.g2qa, g2qaCheck(input.record, input.image, qa), parseCheckReply);
    }
    if (!check.ok) return reject(check.refused ? 'checker_refusal' : 'checker_invalid_output', check.detail);
    if (check.value.verdict === 'consistent') return { status: 'accepted', fill, stats };
    const problems = check.value.problems.map((p) => p.trim()).filter(Boolean);
    if (round >= config.maxRegenerations) {
      return reject('inconsistent', `checker: ${problems.join('; ')} (after ${round + 1} drafts)`);
    }
    stats.regenerations++;
    redo.push({ draft, problems });
  }
}
