/** Every script in examples/ is something users copy: each must run to completion. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const dir = new URL('../../examples/', import.meta.url).pathname;
const examples = readdirSync(dir).filter((f) => f.endsWith('.ts')).sort();

describe('examples', () => {
  it('exist', () => expect(examples.length).toBeGreaterThan(0));
  for (const f of examples) {
    it(`${f} runs`, () => {
      // Examples that write results take an output directory as their first argument (users keep theirs).
      const out = mkdtempSync(join(tmpdir(), 'pairuni-example-'));
      try {
        const r = spawnSync(process.execPath, ['--import', 'tsx', `${dir}${f}`, join(out, 'out')], { encoding: 'utf8', timeout: 840_000, env: { ...process.env, PAIRUNI_EXAMPLE_CI: '1' } });
        expect(r.status, `${f} failed:\n${r.stdout}\n${r.stderr}`).toBe(0);
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
    }, 900_000); // spawnSync's limit comes first, so the failure names the example
  }
});
