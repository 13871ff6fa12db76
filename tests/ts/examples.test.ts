/** Every script in examples/ is something users copy: each must run to completion. */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const dir = new URL('../../examples/', import.meta.url).pathname;
const examples = readdirSync(dir).filter((f) => f.endsWith('.ts')).sort();

describe('examples', () => {
  it('exist', () => expect(examples.length).toBeGreaterThan(0));
  for (const f of examples) {
    it(`${f} runs`, () => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', `${dir}${f}`], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, PAIRUNI_EXAMPLE_CI: '1' } });
      expect(r.status, `${f} failed:\n${r.stdout}\n${r.stderr}`).toBe(0);
    }, 300_000);
  }
});
