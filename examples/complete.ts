/**
 * Semantic completion with the SDK: one understanding and one generation sample are completed
 * and checked. With OPENAI_BASE_URL set (plus OPENAI_API_KEY, PAIRUNI_MODEL_U2C, PAIRUNI_MODEL_G2QA)
 * it calls that endpoint; without it, it starts a local scripted stand-in so it runs offline.
 *
 *   npx tsx examples/complete.ts
 *   OPENAI_BASE_URL=http://localhost:8000/v1 PAIRUNI_MODEL_U2C=Qwen/Qwen2.5-VL-7B-Instruct \
 *     PAIRUNI_MODEL_G2QA=Qwen/Qwen2.5-VL-7B-Instruct npx tsx examples/complete.ts
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Completer, type CompletionItem } from 'pairuni';
import { startScriptedServer, type ScriptedServer } from 'pairuni/testing';

// A 1×1 PNG: real endpoints need a decodable image.
const PIXEL = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
  'base64',
);

async function main(): Promise<void> {
  let server: ScriptedServer | undefined;
  let baseURL = process.env.OPENAI_BASE_URL;
  if (!baseURL) {
    console.log('OPENAI_BASE_URL is not set: using a local scripted endpoint (no network).');
    server = await startScriptedServer((req) => {
      if (req.system.includes('reviewer')) return { content: '{"verdict": "consistent", "problems": []}' };
      if (req.system.includes('text-to-image prompts for annotated photographs')) {
        return {
          content: JSON.stringify({
            facts: ['two cats'],
            prompt:
              'Two ginger cats asleep side by side on a grey sofa in a bright living room, afternoon light from a window on the left, a knitted blanket under them',
          }),
        };
      }
      return {
        content: JSON.stringify({
          question: 'Where is the apple relative to the mug, and what colour is the mug?',
          choices: { A: 'Left of it; blue', B: 'Right of it; blue', C: 'Left of it; white', D: 'Inside it; blue' },
          answer: 'A',
        }),
      };
    });
    baseURL = server.url;
  }
  const dir = await mkdtemp(join(tmpdir(), 'pairuni-example-'));
  try {
    const items: CompletionItem[] = [
      {
        direction: 'u2c',
        record: {
          id: 'u1',
          image: 'u1.png',
          question: 'How many cats are on the sofa?',
          choices: ['One', 'Two', 'Three', 'Four'],
          answer: 'B',
        },
        image: { bytes: PIXEL },
      },
      {
        direction: 'g2qa',
        record: {
          id: 'g1',
          image: 'g1.png',
          prompt: 'A red apple to the left of a blue mug on a wooden table',
          category: 'two object',
        },
        image: { bytes: PIXEL },
      },
    ];
    const completer = new Completer({
      baseURL,
      apiKey: process.env.OPENAI_API_KEY ?? 'local',
      models: { u2c: process.env.PAIRUNI_MODEL_U2C ?? 'scripted', g2qa: process.env.PAIRUNI_MODEL_G2QA ?? 'scripted' },
      concurrency: 2,
      cachePath: join(dir, 'cache.jsonl'),
      pricing: { default: { inputPerMTok: 2, outputPerMTok: 8 } },
    });
    const ac = new AbortController();
    process.once('SIGINT', () => ac.abort());
    const job = completer.run(items, { signal: ac.signal });
    for await (const r of job) {
      if (r.status === 'accepted')
        console.log(
          r.id,
          'accepted:',
          r.direction === 'u2c' ? r.record.caption : `${r.record.question} → ${r.record.answer}`,
        );
      else console.log(r.id, r.status, r.reason, r.detail);
    }
    const rep = job.report();
    console.log(
      `requests ${rep.requests.sent}, tokens ${rep.usage.inputTokens}/${rep.usage.outputTokens}, ~$${rep.usage.costUsd?.toFixed(5)}`,
    );
  } finally {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
