/**
 * Validation of model replies. Replies must be one JSON object; a single ```json fence around it is
 * tolerated because many models add one even when told not to, anything else (prose, two objects,
 * trailing notes) is an error whose message is fed back to the model.
 */
import { z } from 'zod';
import type { G2qaFill } from './types.js';

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

const FENCE = /^```(?:json|JSON)?[ \t]*\r?\n([\s\S]*?)\r?\n?```$/;

export function parseJsonReply(text: string): Parsed<unknown> {
  let body = text.trim();
  const m = FENCE.exec(body);
  if (m) body = m[1].trim();
  if (!body.startsWith('{')) {
    return {
      ok: false,
      error: `the reply must be a single JSON object, but it starts with ${JSON.stringify(body.slice(0, 40))}`,
    };
  }
  try {
    return { ok: true, value: JSON.parse(body) };
  } catch (e) {
    return { ok: false, error: `the reply is not valid JSON (${(e as Error).message})` };
  }
}

function describeIssues(err: z.ZodError): string {
  return err.issues
    .map((i) => (i.path.length ? `${i.path.map(String).join('.')}: ${i.message}` : i.message))
    .join('; ');
}

function validate<T>(schema: z.ZodType<T>, text: string): Parsed<T> {
  const j = parseJsonReply(text);
  if (!j.ok) return j;
  const r = schema.safeParse(j.value);
  return r.success ? { ok: true, value: r.data } : { ok: false, error: describeIssues(r.error) };
}

export function countWords(s: string): number {
  return s.trim().split(/\s+/).filter(Boolean).length;
}

const nonEmpty = z.string().trim().min(1, 'must not be empty');

export function u2cReplySchema(words: { min: number; max: number }) {
  return z
    .object({
      facts: z.array(nonEmpty).min(1, 'list at least one fact').max(12),
      prompt: nonEmpty,
    })
    .strict()
    .superRefine((v, ctx) => {
      const n = countWords(v.prompt);
      if (n < words.min || n > words.max) {
        ctx.addIssue({
          code: 'custom',
          path: ['prompt'],
          message: `must have between ${words.min} and ${words.max} words (it has ${n})`,
        });
      }
      if (v.prompt.trim().endsWith('?')) {
        ctx.addIssue({ code: 'custom', path: ['prompt'], message: 'must be a description, not a question' });
      }
    });
}
export type U2cReply = z.infer<ReturnType<typeof u2cReplySchema>>;

export function parseU2cReply(text: string, words: { min: number; max: number }): Parsed<U2cReply> {
  return validate(u2cReplySchema(words), text);
}

const ANSWER_LETTERS = ['A', 'B', 'C', 'D'] as const;

export const G2qaReply = z
  .object({
    question: z.string().trim().min(8, 'must be a full question'),
    choices: z.object({ A: nonEmpty, B: nonEmpty, C: nonEmpty, D: nonEmpty }).strict(),
    answer: z.string(),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (!(ANSWER_LETTERS as readonly string[]).includes(v.answer)) {
      ctx.addIssue({
        code: 'custom',
        path: ['answer'],
        message: `must be exactly one letter among A, B, C, D that names a key of choices (got ${JSON.stringify(v.answer)})`,
      });
    }
    const seen = new Map<string, string>();
    for (const k of ANSWER_LETTERS) {
      const norm = v.choices[k].trim().toLowerCase().replace(/\s+/g, ' ');
      const prev = seen.get(norm);
      if (prev) {
        ctx.addIssue({
          code: 'custom',
          path: ['choices', k],
          message: `repeats option ${prev}; all four options must differ`,
        });
      } else seen.set(norm, k);
      if (/^\(?[A-D][.)]\s/.test(v.choices[k])) {
        ctx.addIssue({
          code: 'custom',
          path: ['choices', k],
          message: 'must not start with an option letter; the key already is the letter',
        });
      }
    }
  });
export type G2qaReply = z.infer<typeof G2qaReply>;

export function parseG2qaReply(text: string): Parsed<G2qaReply> {
  return validate(G2qaReply, text);
}

export function g2qaFill(r: G2qaReply): G2qaFill {
  return { question: r.question.trim(), choices: ANSWER_LETTERS.map((k) => r.choices[k].trim()), answer: r.answer };
}

export const CheckReply = z
  .object({
    verdict: z.enum(['consistent', 'inconsistent']),
    problems: z.array(z.string()).max(20),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.verdict === 'inconsistent' && !v.problems.some((p) => p.trim())) {
      ctx.addIssue({
        code: 'custom',
        path: ['problems'],
        message: 'an "inconsistent" verdict must name at least one problem',
      });
    }
  });
export type CheckReply = z.infer<typeof CheckReply>;

export function parseCheckReply(text: string): Parsed<CheckReply> {
  return validate(CheckReply, text);
}
