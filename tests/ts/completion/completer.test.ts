import { afterEach, describe, expect, it } from 'vitest';
import { DataError } from '../../../src/errors.js';
import {
  Completer,
  startScriptedServer,
  type CompletionResult,
  type ScriptedServer,
} from '../../../src/completion/index.js';
import { BAD, config, gItem, instantSleep, itemIdOf, router, uItem, VALID_G, VALID_U } from './helpers.js';

let server: ScriptedServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function setup(script: Parameters<typeof router>[0] = {}, over: Parameters<typeof config>[1] = {}) {
  const r = router(script);
  server = await startScriptedServer(r.handler);
  const { sleep, delays } = instantSleep();
  const completer = new Completer(config(server.url, over), { sleep });
  return { completer, calls: r.calls, delays, server };
}

function byId(results: CompletionResult[]) {
  return Object.fromEntries(results.map((r) => [r.id, r]));
}

describe('semantic completion: generate, validate, check', () => {
  it('completes one U and one G item with exactly four calls and reports usage and cost', async () => {
    const { completer, server } = await setup();
    const job = completer.run([uItem('u1'), gItem('g1')]);
    const res = byId(await job.collect());
    expect(server.requests.map((r) => `${itemIdOf(r)}/${r.model}`).sort()).toEqual([
      'g1/chk-g',
      'g1/gen-g',
      'u1/chk-u',
      'u1/gen-u',
    ]);
    // The vision input travels as a data URL in every request of both directions.
    expect(server.requests.map((r) => r.images)).toEqual([1, 1, 1, 1]);
    expect(JSON.stringify(server.requests[0].body)).toContain('data:image/png;base64,');
    expect(server.requests[0].headers.authorization).toBe('Bearer test-key');
    const u = res.u1;
    expect(u.status === 'accepted' && u.direction === 'u2c' && u.record.caption).toBe(JSON.parse(VALID_U).prompt);
    const g = res.g1;
    expect(g.status === 'accepted' && g.direction === 'g2qa' && g.record).toMatchObject({
      question: JSON.parse(VALID_G).question,
      choices: ['Left of it; blue', 'Right of it; blue', 'Left of it; green', 'On top of it; blue'],
      answer: 'A',
      prompt: 'A red apple to the left of a blue mug on a wooden table [g1]',
      category: 'two object',
    });
    const rep = job.report();
    expect(rep.stoppedBy).toBe('completed');
    expect(rep.items).toEqual({ total: 2, accepted: 2, rejected: 0, unfinished: 0, fromCache: 0, fromInput: 0 });
    expect(rep.requests).toEqual({ sent: 4, succeeded: 4, retries: 0, failures: {} });
    expect(rep.usage.inputTokens).toBe(400);
    expect(rep.usage.outputTokens).toBe(80);
    // 400 × $2/M + 80 × $8/M
    expect(rep.usage.costUsd).toBeCloseTo(0.00144, 10);
    expect(rep.usage.byModel['gen-u']).toEqual({
      requests: 1,
      inputTokens: 100,
      outputTokens: 20,
      costUsd: (100 * 2 + 20 * 8) / 1e6,
    });
  });

  it('re-asks after malformed JSON with the validation error and the bad reply fed back', async () => {
    const bad = `Sure! ${VALID_U}`;
    const { completer, calls, server } = await setup({ 'u1/gen-u': [{ content: bad }] });
    const [r] = await completer.run([uItem('u1')]).collect();
    expect(r.status).toBe('accepted');
    expect(calls.get('u1/gen-u')).toBe(2);
    expect(calls.get('u1/chk-u')).toBe(1);
    const retry = server.requests[1];
    expect(retry.turns).toBe(4);
    const msgs = retry.body.messages as { role: string; content: unknown }[];
    expect(msgs[2]).toEqual({ role: 'assistant', content: bad });
    expect(msgs[3].content).toContain(
      'That reply was not accepted: the reply must be a single JSON object, but it starts with "Sure!',
    );
    expect(r.status === 'accepted' && r.stats).toEqual({
      calls: 3,
      replayedCalls: 0,
      formatRetries: 1,
      regenerations: 0,
    });
  });

  it('rejects as invalid_output after 1 + maxFormatRetries malformed replies, without calling the checker', async () => {
    const { completer, calls } = await setup({ 'u1/gen-u': Array(5).fill({ content: '{"facts": ["x"], "prompt": ' }) });
    const job = completer.run([uItem('u1')]);
    const [r] = await job.collect();
    expect(r).toMatchObject({ status: 'rejected', reason: 'invalid_output', origin: 'llm' });
    expect(r.status === 'rejected' && r.detail).toMatch(/^the reply is not valid JSON .*\(after 3 attempts\)$/);
    expect(calls.get('u1/gen-u')).toBe(3);
    expect(calls.get('u1/chk-u')).toBeUndefined();
    expect(job.report().byDirection.u2c.rejected.invalid_output).toBe(1);
    expect(job.report().byDirection.u2c.formatRetries).toBe(2);
  });

  it('feeds back a wrong answer letter and accepts the corrected reply', async () => {
    const wrong = JSON.stringify({ ...JSON.parse(VALID_G), answer: 'E' });
    const { completer, calls, server } = await setup({ 'g1/gen-g': [{ content: wrong }] });
    const [r] = await completer.run([gItem('g1')]).collect();
    expect(r.status === 'accepted' && r.direction === 'g2qa' && r.record.answer).toBe('A');
    expect(calls.get('g1/gen-g')).toBe(2);
    expect(server.requests[1].text).toContain(
      'answer: must be exactly one letter among A, B, C, D that names a key of choices (got "E")',
    );
  });

  it('rejects a refusal at once (refusal field or content filter), with no retry', async () => {
    const { completer, calls } = await setup({
      'u1/gen-u': [{ content: null, refusal: "I can't help with that." }],
      'g1/gen-g': [{ content: '', finishReason: 'content_filter' }],
      'u2/chk-u': [{ content: null, refusal: 'No.' }],
    });
    const job = completer.run([uItem('u1'), gItem('g1'), uItem('u2')]);
    const res = byId(await job.collect());
    expect(res.u1).toMatchObject({ status: 'rejected', reason: 'refusal', detail: "refused: I can't help with that." });
    expect(res.g1).toMatchObject({ status: 'rejected', reason: 'refusal', detail: 'blocked by the content filter' });
    expect(res.u2).toMatchObject({ status: 'rejected', reason: 'checker_refusal', detail: 'refused: No.' });
    expect(Object.fromEntries(calls)).toEqual({ 'u1/gen-u': 1, 'g1/gen-g': 1, 'u2/gen-u': 1, 'u2/chk-u': 1 });
  });

  it('regenerates after a contradiction, passing the objections back, then accepts', async () => {
    const { completer, calls, server } = await setup({
      'u1/chk-u': [{ content: BAD('the prompt mentions a dog that is not in the image') }],
    });
    const job = completer.run([uItem('u1')]);
    const [r] = await job.collect();
    expect(r.status === 'accepted' && r.stats).toEqual({
      calls: 4,
      replayedCalls: 0,
      formatRetries: 0,
      regenerations: 1,
    });
    expect(Object.fromEntries(calls)).toEqual({ 'u1/gen-u': 2, 'u1/chk-u': 2 });
    const regen = server.requests[2];
    expect(regen.model).toBe('gen-u');
    expect(regen.text).toContain('- the prompt mentions a dog that is not in the image');
    expect(regen.text).toContain('Earlier answers were rejected by a reviewer.');
    expect(regen.text).toContain('Two tabby cats');
    const d = job.report().byDirection.u2c;
    expect([d.accepted, d.acceptedAfterRegeneration, d.regenerations]).toEqual([1, 1, 1]);
  });

  it('rejects as inconsistent after maxRegenerations, with counts per reason in the report', async () => {
    const { completer, calls } = await setup({
      'g1/chk-g': Array(3).fill({ content: BAD('option C also fits') }),
      'u1/chk-u': Array(3).fill({ content: '{"verdict": "inconsistent"}' }),
    });
    const job = completer.run([gItem('g1'), uItem('u1'), uItem('u2')]);
    const res = byId(await job.collect());
    expect(res.g1).toMatchObject({
      status: 'rejected',
      reason: 'inconsistent',
      detail: 'checker: option C also fits (after 3 drafts)',
    });
    expect(res.u1).toMatchObject({ status: 'rejected', reason: 'checker_invalid_output' });
    expect(calls.get('g1/gen-g')).toBe(3);
    expect(calls.get('g1/chk-g')).toBe(3);
    expect(calls.get('u1/gen-u')).toBe(1);
    expect(calls.get('u1/chk-u')).toBe(3);
    const rep = job.report();
    expect(rep.items).toMatchObject({ total: 3, accepted: 1, rejected: 2 });
    expect(rep.byDirection.g2qa.rejected).toMatchObject({ inconsistent: 1, invalid_output: 0 });
    expect(rep.byDirection.g2qa.regenerations).toBe(2);
    expect(rep.byDirection.u2c.rejected).toMatchObject({ checker_invalid_output: 1 });
  });

  it('leaves records that already carry their completion untouched, and can drop the image for G→QA', async () => {
    const { completer, server } = await setup({}, { g2qaWithImage: false });
    const res = byId(await completer.run([uItem('u1', { caption: 'given' }), gItem('g1')]).collect());
    expect(res.u1).toMatchObject({ status: 'accepted', origin: 'input', record: { caption: 'given' } });
    expect(server.requests.map((r) => [r.model, r.images])).toEqual([
      ['gen-g', 0],
      ['chk-g', 0],
    ]);
  });

  it('uses the class-specific question style for G→QA', async () => {
    const { completer, server } = await setup();
    await completer.run([gItem('g1', 'Text'), gItem('g2', 'One object')]).collect();
    const gen = (id: string) => server.requests.find((r) => r.model === 'gen-g' && itemIdOf(r) === id)!;
    expect(gen('g1').text).toContain('Prompt class: text');
    expect(gen('g1').system).toContain('near-misses');
    expect(gen('g2').system).toContain('at least two of its properties');
  });

  it('throws DataError for an invalid record or an answer letter outside the choices', async () => {
    const { completer, server } = await setup();
    const bad = uItem('u1');
    if (bad.direction === 'u2c') bad.record.answer = 'F';
    bad.source = { file: 'u.jsonl', row: 7 };
    const err = await completer
      .run([bad])
      .collect()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect(err).toMatchObject({
      file: 'u.jsonl',
      row: 7,
      message: 'u.jsonl:7: answer F names no choice (there are 4)',
    });
    expect(server.requests).toHaveLength(0);
  });

  it('throws DataError naming file and row for a missing or non-image file given by path', async () => {
    const { completer, server } = await setup();
    const missing = uItem('u1');
    missing.image = { path: '/nonexistent/pairuni/u1.png' };
    missing.source = { file: 'u.jsonl', row: 4 };
    const e1 = await completer
      .run([missing])
      .collect()
      .catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(DataError);
    expect(e1).toMatchObject({
      file: 'u.jsonl',
      row: 4,
      message: 'u.jsonl:4: image /nonexistent/pairuni/u1.png is not found',
    });
    const notImage = gItem('g1');
    notImage.image = { path: new URL(import.meta.url).pathname };
    notImage.source = { file: 'g.jsonl', row: 9 };
    const e2 = await completer
      .run([notImage])
      .collect()
      .catch((e: unknown) => e);
    expect(e2).toMatchObject({ name: 'DataError', file: 'g.jsonl', row: 9 });
    expect((e2 as Error).message).toMatch(/is not a PNG, JPEG, GIF or WebP image$/);
    expect(server.requests).toHaveLength(0);
  });
});
