/**
 * A scripted OpenAI-compatible chat endpoint on 127.0.0.1 (random port), for tests and for
 * offline demos: each POST /v1/chat/completions is answered by a handler you supply. It can return
 * any content, a refusal, an HTTP error with headers (429 + retry-after), a delay longer than the
 * client's timeout, or a raw body.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A request as the scripted server's handler sees it. */
export interface ScriptedRequest {
  /** 1-based arrival order. */
  n: number;
  /** The `model` of the request. */
  model: string;
  /** The parsed JSON body. */
  body: Record<string, unknown>;
  /** All text parts of all messages, joined by newlines (handy for routing by marker). */
  text: string;
  /** Text of the system message. */
  system: string;
  /** Number of image parts across the messages. */
  images: number;
  /** Number of messages in the conversation (a re-ask after bad output has 4). */
  turns: number;
  /** The HTTP request headers. */
  headers: IncomingMessage['headers'];
}

/** What a handler answers: a chat completion (content, refusal, usage) or a raw HTTP status; `delayMs` waits first. */
export type ScriptedReply =
  | {
      content?: string | null;
      refusal?: string | null;
      finishReason?: string;
      usage?: { prompt_tokens: number; completion_tokens: number };
      delayMs?: number;
    }
  | { status: number; headers?: Record<string, string>; body?: unknown; delayMs?: number };

/** Answers each chat request of a scripted server. */
export type ScriptedHandler = (req: ScriptedRequest) => ScriptedReply | Promise<ScriptedReply>;

/** A running scripted server and what it has seen. */
export interface ScriptedServer {
  /** Base URL to give the client, ending in /v1. */
  url: string;
  /** Every request received, in arrival order. */
  requests: ScriptedRequest[];
  /** Requests currently being answered, and the most seen at once. */
  inFlight: number;
  /** The most requests answered at once. */
  maxInFlight: number;
  /** Stops the server, cancelling delayed replies and dropping open connections. */
  close(): Promise<void>;
}

/** Starts a scripted OpenAI-compatible endpoint (see above) on 127.0.0.1; `close()` it when done. */
export async function startScriptedServer(handler: ScriptedHandler): Promise<ScriptedServer> {
  const timers = new Set<NodeJS.Timeout>();
  const state: ScriptedServer = {
    url: '',
    requests: [],
    inFlight: 0,
    maxInFlight: 0,
    close: async () => {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections();
      await new Promise<void>((res) => server.close(() => res()));
    },
  };
  const wait = (ms: number) =>
    new Promise<void>((res) => {
      const t = setTimeout(() => {
        timers.delete(t);
        res();
      }, ms);
      timers.add(t);
    });

  const server = createServer((req, res) => {
    void answer(req, res).catch((e: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: `scripted server: ${String(e)}` } }));
    });
  });

  async function answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (req.method !== 'POST' || !req.url?.endsWith('/chat/completions')) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: `no route ${req.method} ${req.url}` } }));
      return;
    }
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
    const messages = (body.messages ?? []) as { role: string; content: unknown }[];
    const texts: string[] = [];
    let images = 0;
    let system = '';
    for (const m of messages) {
      const parts =
        typeof m.content === 'string'
          ? [{ type: 'text', text: m.content }]
          : ((m.content ?? []) as { type: string; text?: string }[]);
      for (const p of parts) {
        if (p.type === 'text') texts.push(p.text ?? '');
        else if (p.type === 'image_url') images++;
      }
      if (m.role === 'system') system = parts.map((p) => p.text ?? '').join('');
    }
    const r: ScriptedRequest = {
      n: state.requests.length + 1,
      model: String(body.model),
      body,
      text: texts.join('\n'),
      system,
      images,
      turns: messages.length,
      headers: req.headers,
    };
    state.requests.push(r);
    state.inFlight++;
    state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
    try {
      const reply = await handler(r);
      if (reply.delayMs) await wait(reply.delayMs);
      if (res.destroyed) return;
      if ('status' in reply) {
        res.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers });
        res.end(
          typeof reply.body === 'string'
            ? reply.body
            : JSON.stringify(reply.body ?? { error: { message: `scripted ${reply.status}` } }),
        );
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          id: `chatcmpl-${r.n}`,
          object: 'chat.completion',
          created: Math.floor(Date.now() / 1000),
          model: r.model,
          choices: [
            {
              index: 0,
              message: { role: 'assistant', content: reply.content ?? null, refusal: reply.refusal ?? null },
              finish_reason: reply.finishReason ?? 'stop',
            },
          ],
          usage: {
            ...(reply.usage ?? { prompt_tokens: 100, completion_tokens: 20 }),
            total_tokens: (reply.usage?.prompt_tokens ?? 100) + (reply.usage?.completion_tokens ?? 20),
          },
        }),
      );
    } finally {
      state.inFlight--;
    }
  }

  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  return state;
}
