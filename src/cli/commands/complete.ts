/**
 * `pairuni complete`: semantic completion of U / G manifests against an OpenAI-compatible endpoint.
 * Interrupt with Ctrl-C and run the same command again: finished items come from the cache. The
 * first Ctrl-C starts nothing new and lets the requests in flight finish (they are paid for, so
 * they are kept); a second one quits at once.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError } from '../../errors.js';
import { Completer } from '../../completion/completer.js';
import { parseCompleterConfig } from '../../completion/config.js';
import { readCompletionManifest } from '../../completion/manifest.js';
import { writeCompletionOutputs } from '../../completion/outputs.js';
import type { CompletionReport } from '../../completion/report.js';
import type { CompletionItem, CompletionResult, Direction } from '../../completion/types.js';
import { onInterrupt } from '../../util/interrupt.js';
import { Progress } from '../../util/progress.js';

export const summary = 'fill U samples with a generation prompt and G samples with a multiple-choice QA via an LLM';

const HELP = `usage: pairuni complete [--u U.jsonl] [--g G.jsonl] --out DIR --base-url URL --model-u2c M --model-g2qa M [options]

Semantic completion (PairUni §2.1.1): each understanding record gets a caption (a ~30-word generation
prompt holding the facts its question needs); each generation record gets question/choices/answer.
A second call checks every output against its source; contradictions are regenerated, then rejected.

inputs / outputs
  --u FILE                 understanding manifest (JSONL UnderstandingRecord; images relative to it)
  --g FILE                 generation manifest (JSONL GenerationRecord)
  --out DIR                writes u.completed.jsonl, g.completed.jsonl, rejections.jsonl, report.json
  --cache FILE             completion cache (default DIR/cache.jsonl); reruns pay only for what is missing
  --config FILE            JSON with any CompleterConfig fields; flags override it
endpoint
  --base-url URL           OpenAI-compatible base URL (default $OPENAI_BASE_URL)
  --api-key KEY            default $OPENAI_API_KEY
  --model-u2c M            vision model writing captions from image + QA
  --model-g2qa M           model writing QA from a generation prompt (+ image)
  --model-check-u2c M      checker for captions (default: --model-u2c)
  --model-check-g2qa M     checker for QA (default: --model-g2qa)
  --no-g2qa-image          do not send the reference image with G→QA requests
  --json-mode              send response_format json_object
  --temperature T          --max-completion-tokens N
limits
  --concurrency N          parallel items (default 4)
  --timeout-ms MS          per request (default 180000)
  --max-retries N          transport retries per request (default 5)
  --max-format-retries N   re-asks after invalid output (default 2)
  --max-regenerations N    regenerations after a failed consistency check (default 2)
  --max-requests N         spend guard: stop starting requests after N
  --max-tokens N           spend guard: stop once N tokens are spent
  --price-in USD           price per 1M input tokens (for the cost estimate)
  --price-out USD          price per 1M output tokens
  --quiet                  no progress bar

exit status: 0 all items finished; 3 some items left unfinished (spend guard, refused requests);
130 interrupted. Finished work is kept in every case. The first Ctrl-C starts no new request and
waits for those in flight (they are cached, so a rerun pays for nothing twice); a second quits at once.`;

const OPTIONS = {
  u: { type: 'string' },
  g: { type: 'string' },
  out: { type: 'string' },
  cache: { type: 'string' },
  config: { type: 'string' },
  'base-url': { type: 'string' },
  'api-key': { type: 'string' },
  'model-u2c': { type: 'string' },
  'model-g2qa': { type: 'string' },
  'model-check-u2c': { type: 'string' },
  'model-check-g2qa': { type: 'string' },
  'no-g2qa-image': { type: 'boolean' },
  'json-mode': { type: 'boolean' },
  temperature: { type: 'string' },
  'max-completion-tokens': { type: 'string' },
  concurrency: { type: 'string' },
  'timeout-ms': { type: 'string' },
  'max-retries': { type: 'string' },
  'max-format-retries': { type: 'string' },
  'max-regenerations': { type: 'string' },
  'max-requests': { type: 'string' },
  'max-tokens': { type: 'string' },
  'price-in': { type: 'string' },
  'price-out': { type: 'string' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

function num(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new ConfigError(`--${flag} must be a number, got ${JSON.stringify(v)}`);
  return n;
}

/** Sets obj[a][b]... = v when v is defined, creating intermediate objects. */
function put(obj: Record<string, unknown>, path: string[], v: unknown): void {
  if (v === undefined) return;
  let o = obj;
  for (const k of path.slice(0, -1)) {
    if (typeof o[k] !== 'object' || o[k] === null) o[k] = {};
    o = o[k] as Record<string, unknown>;
  }
  o[path[path.length - 1]] = v;
}

export async function run(argv: string[]): Promise<number> {
  // Unknown flags and missing values are reported by the one handler in src/cli/index.ts.
  const args = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }).values;
  if (args.help) {
    console.log(HELP);
    return 0;
  }
  if (!args.out) throw new ConfigError('--out DIR is required');
  if (!args.u && !args.g) throw new ConfigError('give --u and/or --g');

  let cfg: Record<string, unknown> = {};
  if (args.config) {
    try {
      cfg = JSON.parse(await readFile(args.config, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new ConfigError(`cannot read --config ${args.config}: ${(e as Error).message}`, { cause: e });
    }
  }
  put(cfg, ['baseURL'], args['base-url'] ?? (cfg.baseURL === undefined ? process.env.OPENAI_BASE_URL : undefined));
  put(cfg, ['apiKey'], args['api-key'] ?? (cfg.apiKey === undefined ? process.env.OPENAI_API_KEY : undefined));
  if (cfg.baseURL === undefined || cfg.baseURL === '') {
    throw new ConfigError('no endpoint: pass --base-url URL (e.g. http://localhost:8000/v1) or set OPENAI_BASE_URL');
  }
  if (cfg.apiKey === undefined || cfg.apiKey === '') {
    throw new ConfigError(
      'no API key: set OPENAI_API_KEY or pass --api-key KEY (or apiKey in --config); local servers (vLLM, Ollama) accept any non-empty key',
    );
  }
  put(cfg, ['models', 'u2c'], args['model-u2c']);
  put(cfg, ['models', 'g2qa'], args['model-g2qa']);
  put(cfg, ['models', 'verifyU2c'], args['model-check-u2c']);
  put(cfg, ['models', 'verifyG2qa'], args['model-check-g2qa']);
  // A run that only has one direction still needs a model name for the other to validate.
  const models = (cfg.models ?? {}) as Record<string, unknown>;
  if (!args.u && models.u2c === undefined && typeof models.g2qa === 'string') put(cfg, ['models', 'u2c'], models.g2qa);
  if (!args.g && models.g2qa === undefined && typeof models.u2c === 'string') put(cfg, ['models', 'g2qa'], models.u2c);
  if (args['no-g2qa-image']) cfg.g2qaWithImage = false;
  if (args['json-mode']) put(cfg, ['request', 'jsonMode'], true);
  put(cfg, ['request', 'temperature'], num('temperature', args.temperature));
  put(cfg, ['request', 'maxCompletionTokens'], num('max-completion-tokens', args['max-completion-tokens']));
  put(cfg, ['concurrency'], num('concurrency', args.concurrency));
  put(cfg, ['timeoutMs'], num('timeout-ms', args['timeout-ms']));
  put(cfg, ['retry', 'maxRetries'], num('max-retries', args['max-retries']));
  put(cfg, ['maxFormatRetries'], num('max-format-retries', args['max-format-retries']));
  put(cfg, ['maxRegenerations'], num('max-regenerations', args['max-regenerations']));
  put(cfg, ['budget', 'maxRequests'], num('max-requests', args['max-requests']));
  put(cfg, ['budget', 'maxTokens'], num('max-tokens', args['max-tokens']));
  const priceIn = num('price-in', args['price-in']);
  const priceOut = num('price-out', args['price-out']);
  if ((priceIn === undefined) !== (priceOut === undefined))
    throw new ConfigError('give both --price-in and --price-out');
  if (priceIn !== undefined) put(cfg, ['pricing', 'default'], { inputPerMTok: priceIn, outputPerMTok: priceOut });
  put(cfg, ['cachePath'], args.cache ?? (cfg.cachePath === undefined ? join(args.out, 'cache.jsonl') : undefined));
  const config = parseCompleterConfig(cfg, 'pairuni complete');

  // All input rows and images are checked before the first paid request.
  const items: CompletionItem[] = [];
  const directions: Direction[] = [];
  if (args.u) {
    items.push(...(await readCompletionManifest(args.u, 'u2c')));
    directions.push('u2c');
  }
  if (args.g) {
    items.push(...(await readCompletionManifest(args.g, 'g2qa')));
    directions.push('g2qa');
  }

  const completer = new Completer(config);
  // The first Ctrl-C is a graceful stop: requests in flight are paid for, so they finish and are cached.
  const interrupt = onInterrupt({
    message: 'complete: stopping: no new request is sent; waiting for those in flight to finish and be cached',
  });
  const bar = new Progress({ label: 'complete', total: items.length, unit: 'items', silent: args.quiet });
  const results: CompletionResult[] = [];
  const job = completer.run(items, { stop: interrupt.signal });
  let failure: unknown;
  let ok = 0;
  let rejected = 0;
  try {
    for await (const r of job) {
      results.push(r);
      if (r.status === 'accepted') ok++;
      else if (r.status === 'rejected') rejected++;
      bar.tick(1, `ok ${ok} rejected ${rejected}`);
    }
  } catch (e) {
    failure = e;
  } finally {
    interrupt.dispose();
    bar.done();
  }
  const report = job.report();
  // Items the run ended without (fatal error, Ctrl-C) are listed as unfinished, like the counts in the report.
  await writeCompletionOutputs(args.out, [...results, ...job.leftover()], report, directions);
  if (!args.quiet) process.stderr.write(`${describe(report)}\noutputs in ${args.out}\n`);
  if (report.stoppedBy === 'stopped' || report.stoppedBy === 'aborted') return 130;
  if (failure) throw failure;
  return report.items.unfinished > 0 ? 3 : 0;
}

function describe(r: CompletionReport): string {
  const reasons = Object.values(r.byDirection)
    .flatMap((d) => Object.entries(d.rejected))
    .reduce<Record<string, number>>((acc, [k, v]) => ((acc[k] = (acc[k] ?? 0) + v), acc), {});
  const why = Object.entries(reasons)
    .filter(([, v]) => v > 0)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  const cost = r.usage.costUsd === null ? 'cost unknown (no price set)' : `~$${r.usage.costUsd.toFixed(4)}`;
  return [
    `complete: ${r.stoppedBy}${r.stopDetail ? ` (${r.stopDetail})` : ''}: ${r.items.accepted} accepted, ${r.items.rejected} rejected${why ? ` (${why})` : ''}, ${r.items.unfinished} unfinished; ${r.items.fromCache} from cache`,
    `requests ${r.requests.sent} (${r.requests.retries} retries), calls replayed ${r.calls.replayed}; tokens in ${r.usage.inputTokens} out ${r.usage.outputTokens}; ${cost}`,
  ].join('\n');
}
