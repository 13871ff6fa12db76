/**
 * `pairuni <command> [...]`: each command lives in src/cli/commands/<name>.ts and exports
 * `run(argv): Promise<number>` plus a one-line `summary`.
 *
 * Handled here, once, for every command: option parsing errors from node's `parseArgs` (an unknown
 * flag, a missing value: `ERR_PARSE_ARGS_*`) become a one-line message pointing to `--help` and exit
 * status 2, and a negative number after an option (`--threshold -1`) is taken as its value.
 */
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PairuniError } from '../errors.js';
import { USAGE_EXIT } from './options.js';

interface Command {
  run(argv: string[]): Promise<number>;
  summary: string;
}

const here = dirname(fileURLToPath(import.meta.url));

function commandNames(): string[] {
  return readdirSync(join(here, 'commands'))
    .filter((f) => /\.(js|ts)$/.test(f) && !f.endsWith('.d.ts'))
    .map((f) => f.replace(/\.(js|ts)$/, ''))
    .sort();
}

async function load(name: string): Promise<Command | undefined> {
  if (!commandNames().includes(name)) return undefined;
  const ext = import.meta.url.endsWith('.ts') ? 'ts' : 'js';
  return (await import(`./commands/${name}.${ext}`)) as Command;
}

async function help(): Promise<void> {
  const lines = ['usage: pairuni <command> [options]   (pairuni <command> --help for its options)', '', 'commands:'];
  for (const n of commandNames()) {
    const c = await load(n);
    lines.push(`  ${n.padEnd(10)} ${c?.summary ?? ''}`);
  }
  console.log(lines.join('\n'));
}

export { USAGE_EXIT };

/** node's parseArgs errors carry `code: 'ERR_PARSE_ARGS_…'` (unknown option, bad value, positional). */
export function isParseArgsError(e: unknown): e is Error & { code: string } {
  const code = (e as { code?: unknown } | null)?.code;
  return e instanceof Error && typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_');
}

const NEGATIVE_NUMBER = /^-(\d|\.\d)/;

/**
 * `--opt -1` → `--opt=-1`: parseArgs refuses a value that starts with a dash as ambiguous, but a
 * negative number is never an option name. (After a boolean flag the result is still an error.)
 */
export function joinNegativeValues(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const next = argv[i + 1];
    if (/^--[^=]+$/.test(a) && next !== undefined && NEGATIVE_NUMBER.test(next) && Number.isFinite(Number(next))) {
      out.push(`${a}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

/** One line: node's message (its lines joined) and where to look. */
export function usageMessage(cmd: string, e: Error): string {
  const msg = e.message
    .replace(/\s*To specify a positional argument starting with a '-'.*$/s, '')
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' ');
  return `pairuni ${cmd}: ${msg} (see 'pairuni ${cmd} --help')`;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    await help();
    return 0;
  }
  const c = await load(cmd);
  if (!c) {
    console.error(`pairuni: unknown command '${cmd}'`);
    await help();
    return 2;
  }
  try {
    return await c.run(joinNegativeValues(rest));
  } catch (e) {
    if (isParseArgsError(e)) {
      console.error(usageMessage(cmd, e));
      return USAGE_EXIT;
    }
    if (e instanceof PairuniError) {
      console.error(`pairuni ${cmd}: ${e.name} [${e.code}]: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
