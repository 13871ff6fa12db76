import { describe, expect, it } from 'vitest';
import {
  g2qaFill,
  parseCheckReply,
  parseG2qaReply,
  parseJsonReply,
  parseU2cReply,
} from '../../../src/completion/replies.js';
import { promptClassOf } from '../../../src/completion/templates.js';
import { VALID_G, VALID_U } from './helpers.js';

const words = { min: 15, max: 60 };

describe('strict JSON replies', () => {
  it('accepts a bare object and one ```json fence, nothing else', () => {
    expect(parseJsonReply('{"a":1}')).toEqual({ ok: true, value: { a: 1 } });
    expect(parseJsonReply('```json\n{"a":1}\n```')).toEqual({ ok: true, value: { a: 1 } });
    expect(parseJsonReply('  ```\n{"a":2}\n```  ')).toEqual({ ok: true, value: { a: 2 } });
    const prose = parseJsonReply('Sure! Here it is: {"a":1}');
    expect(prose.ok).toBe(false);
    expect(!prose.ok && prose.error).toContain('must be a single JSON object');
    expect(parseJsonReply('```json\n{"a":1}\n```\nHope this helps').ok).toBe(false);
    const broken = parseJsonReply('{"a":1,}');
    expect(!broken.ok && broken.error).toMatch(/^the reply is not valid JSON/);
    expect(parseJsonReply('[1,2]').ok).toBe(false);
  });
});

describe('understanding → caption reply', () => {
  it('accepts a valid reply', () => {
    const r = parseU2cReply(VALID_U, words);
    expect(r.ok && r.value.prompt).toMatch(/^Two tabby cats/);
  });
  it('enforces the word bounds, with the count in the error', () => {
    const r = parseU2cReply(JSON.stringify({ facts: ['x'], prompt: 'Two cats.' }), words);
    expect(r).toEqual({ ok: false, error: 'prompt: must have between 15 and 60 words (it has 2)' });
  });
  it('rejects extra keys, missing facts and a question as prompt', () => {
    const long = 'word '.repeat(20).trim();
    expect(parseU2cReply(JSON.stringify({ facts: ['x'], prompt: long, note: 'hi' }), words).ok).toBe(false);
    expect(parseU2cReply(JSON.stringify({ facts: [], prompt: long }), words)).toEqual({
      ok: false,
      error: 'facts: list at least one fact',
    });
    expect(parseU2cReply(JSON.stringify({ facts: ['x'], prompt: `${long}?` }), words)).toEqual({
      ok: false,
      error: 'prompt: must be a description, not a question',
    });
  });
});

describe('generation → QA reply', () => {
  const base = JSON.parse(VALID_G) as { question: string; choices: Record<string, string>; answer: string };
  it('accepts a valid reply and maps it onto record fields', () => {
    const r = parseG2qaReply(VALID_G);
    expect(r.ok).toBe(true);
    if (r.ok)
      expect(g2qaFill(r.value)).toEqual({ question: base.question, choices: Object.values(base.choices), answer: 'A' });
  });
  it('requires exactly one letter among A–D', () => {
    for (const answer of ['E', 'a', 'A,B', 'A.', ' A', '']) {
      const r = parseG2qaReply(JSON.stringify({ ...base, answer }));
      expect(r).toEqual({
        ok: false,
        error: `answer: must be exactly one letter among A, B, C, D that names a key of choices (got ${JSON.stringify(answer)})`,
      });
    }
  });
  it('requires exactly the four keys A–D, non-empty and distinct', () => {
    expect(parseG2qaReply(JSON.stringify({ ...base, choices: { A: 'x', B: 'y', C: 'z' } })).ok).toBe(false);
    expect(parseG2qaReply(JSON.stringify({ ...base, choices: { ...base.choices, E: 'extra' } })).ok).toBe(false);
    expect(parseG2qaReply(JSON.stringify({ ...base, choices: ['a', 'b', 'c', 'd'] })).ok).toBe(false);
    const dup = parseG2qaReply(JSON.stringify({ ...base, choices: { A: 'Blue', B: 'blue ', C: 'red', D: 'green' } }));
    expect(dup).toEqual({ ok: false, error: 'choices.B: repeats option A; all four options must differ' });
    const empty = parseG2qaReply(JSON.stringify({ ...base, choices: { ...base.choices, C: '  ' } }));
    expect(empty).toEqual({ ok: false, error: 'choices.C: must not be empty' });
  });
});

describe('checker reply', () => {
  it('needs a verdict, and problems when inconsistent', () => {
    expect(parseCheckReply('{"verdict":"consistent","problems":[]}')).toEqual({
      ok: true,
      value: { verdict: 'consistent', problems: [] },
    });
    expect(parseCheckReply('{"verdict":"inconsistent","problems":[]}').ok).toBe(false);
    expect(parseCheckReply('{"verdict":"maybe","problems":[]}').ok).toBe(false);
  });
});

describe('prompt classes', () => {
  it('maps free-form categories', () => {
    expect(promptClassOf('One object')).toBe('one_object');
    expect(promptClassOf('single_object')).toBe('one_object');
    expect(promptClassOf('two objects')).toBe('two_object');
    expect(promptClassOf('Text')).toBe('text');
    expect(promptClassOf('AI-generated images')).toBe('ai_generated');
    expect(promptClassOf('landscape')).toBe('general');
    expect(promptClassOf(undefined)).toBe('general');
  });
});
