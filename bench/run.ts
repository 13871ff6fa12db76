/**
 * `npm run bench -- <name> [args...]`: runs bench/<name>.ts and prints its figures as one JSON
 * object on the last line (so scripts can `tail -1 | jq`).
 */
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const [name, ...args] = process.argv.slice(2);
const available = readdirSync(here)
  .filter((f) => f.endsWith('.ts') && f !== 'run.ts' && !f.startsWith('_'))
  .map((f) => f.slice(0, -3));
if (!name || !existsSync(join(here, `${name}.ts`))) {
  console.error(`usage: npm run bench -- <${available.join('|')}> [args]`);
  process.exit(2);
}
const mod = (await import(`./${name}.ts`)) as { main(args: string[]): Promise<Record<string, unknown>> };
const figures = await mod.main(args);
console.log(JSON.stringify({ bench: name, ...figures }));
process.exit(0);
