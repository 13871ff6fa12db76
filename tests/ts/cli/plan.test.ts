/**
 * `pairuni plan`: the table and exit 0 when the configuration fits, exit 3 with the change that fits
 * when it does not, and one line with exit 2 for bad input (found by the CLI or by the sidecar).
 */
import { describe, expect, it } from 'vitest';
import { pairuni as run } from './_pairuni.js';

const pairuni = (...argv: string[]) => run(argv);

describe('pairuni plan', () => {
  it('Janus-Pro-7B on 8 x 80 GiB at K = 4 fits: a table of per-rank GiB, exit 0', { timeout: 300_000 }, async () => {
    const r = await pairuni(
      'plan',
      '--family',
      'janus',
      '--preset',
      'Janus-Pro-7B',
      '--ranks',
      '8',
      '--gpu-gib',
      '80',
      '--k',
      '4',
    );
    expect(r.err).toEqual([]);
    expect(r.code).toBe(0);
    const text = r.out.join('\n');
    expect(text).toMatch(/^janus Janus-Pro-7B: 7\.408 B parameters/);
    expect(text).toMatch(/TOTAL per rank +\d+\.\d\d GiB/);
    expect(text.trim().endsWith('fits')).toBe(true);
  });

  it(
    'DiMOO full fine-tuning on one GPU with a reference does not fit: the change that does, exit 3',
    { timeout: 300_000 },
    async () => {
      const r = await pairuni(
        'plan',
        '--family',
        'dimoo',
        '--preset',
        'Lumina-DiMOO',
        '--k',
        '2',
        '--beta',
        '0.04',
        '--no-checkpointing',
        '--json',
      );
      expect(r.code).toBe(3);
      const p = JSON.parse(r.out.join('\n'));
      expect(p.fits).toBe(false);
      expect(p.bytes.total).toBeGreaterThan(p.usable);
      expect(p.suggestion.total).toBeLessThanOrEqual(p.usable);
      expect(p.verdict).toBe(`fits with: ${p.suggestion.change}`);
    },
  );

  it(
    'bad input is one line and exit 2: a family/preset mismatch (sidecar), an unknown preset, a nonsense number (CLI)',
    { timeout: 300_000 },
    async () => {
      const mismatch = await pairuni('plan', '--family', 'dimoo', '--preset', 'Janus-Pro-7B');
      expect(mismatch).toMatchObject({ code: 2, out: [] });
      expect(mismatch.err).toHaveLength(1);
      expect(mismatch.err[0]).toMatch(/preset 'Janus-Pro-7B' is a janus model, not dimoo$/);
      const unknown = await pairuni('plan', '--family', 'janus', '--preset', 'Janus-Pro-70B');
      expect(unknown.code).toBe(2);
      expect(unknown.err[0]).toMatch(
        /unknown preset 'Janus-Pro-70B'; known: Janus-Pro-1B, Janus-Pro-7B, Lumina-DiMOO, BAGEL-7B-MoT$/,
      );
      const nonsense = await pairuni('plan', '--family', 'janus', '--preset', 'Janus-Pro-7B', '--gpu-gib', '-80');
      expect(nonsense).toEqual({
        code: 2,
        out: [],
        err: ["pairuni plan: --gpu-gib must be a number in (0, 1000000], got '-80'"],
      });
    },
  );
});
