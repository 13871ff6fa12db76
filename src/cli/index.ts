/**
 * `pairuni <command> [...]`: each command lives in src/cli/commands/<name>.ts and exports
 * `run(argv): Promise<number>` plus a one-line `summary`.
 */
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PairuniError } from '../errors.js';

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
    return await c.run(rest);
  } catch (e) {
    if (e instanceof PairuniError) {
      console.error(`pairuni ${cmd}: ${e.name} [${e.code}]: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
