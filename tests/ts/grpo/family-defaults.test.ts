/** Family training defaults: Lumina-DiMOO's rollout size 2 (paper, Appendix E) where a config leaves k out. */
import { describe, expect, it } from 'vitest';
import { dimoo } from '../../../src/contract/families/dimoo.js';
import {
  FAMILIES,
  FAMILY_CONFIG_DEFAULTS,
  FAMILY_RECORDS,
  familyOptions,
} from '../../../src/contract/families/index.js';
import { parseTrainConfig } from '../../../src/train/index.js';

const base = { data: '/d/pairs.jsonl', out: '/o' };

describe('family config defaults', () => {
  it('each family is one file; the index composes their options, config defaults and generated records', () => {
    expect(Object.keys(FAMILIES)).toEqual(['janus', 'dimoo', 'bagel']);
    expect(FAMILIES.dimoo).toBe(dimoo.options);
    expect(FAMILY_CONFIG_DEFAULTS).toEqual({
      dimoo: { und: { k: 2 }, gen: { k: 2 } },
      bagel: { gen: { cfgWeight: 4 } },
    });
    expect(Object.keys(FAMILY_RECORDS)).toEqual([
      'JanusLoadOptions',
      'JanusUndOptions',
      'JanusGenOptions',
      'DimooLoadOptions',
      'DimooUndOptions',
      'DimooGenOptions',
      'BagelLoadOptions',
      'BagelUndOptions',
      'BagelGenOptions',
    ]);
  });

  it('dimoo: k = 2 per side unless given; janus keeps the shared default 4', () => {
    const d = parseTrainConfig({ ...base, model: { adapter: 'dimoo', path: '/m' } });
    expect([d.und.k, d.gen.k]).toEqual([2, 2]);
    const given = parseTrainConfig({
      ...base,
      model: { adapter: 'dimoo', path: '/m' },
      und: { k: 4 },
      gen: { temperature: 0.5 },
    });
    expect([given.und.k, given.gen.k, given.gen.temperature]).toEqual([4, 2, 0.5]);
    const j = parseTrainConfig({ ...base, model: { path: '/m' } });
    expect([j.und.k, j.gen.k]).toEqual([4, 4]);
  });

  it('dimoo sampling options default to the paper: 2 text steps, 35 image steps', () => {
    expect(familyOptions('dimoo', 'und', {})).toEqual({ steps: 2, block_length: 0, cfg_weight: 1 });
    expect(familyOptions('dimoo', 'gen', {})).toEqual({ steps: 35 });
    expect(() => familyOptions('dimoo', 'gen', { step: 3 })).toThrow();
  });

  it("bagel: upstream's text-to-image sampler (guidance 4, 50 points, shift 3, interval [0.4, 1], global renorm 0)", () => {
    const b = parseTrainConfig({ ...base, model: { adapter: 'bagel', path: '/m' } });
    expect(b.gen.cfgWeight).toBe(4);
    expect(
      parseTrainConfig({ ...base, model: { adapter: 'bagel', path: '/m' }, gen: { cfgWeight: 2 } }).gen.cfgWeight,
    ).toBe(2);
    expect(familyOptions('bagel', 'gen', {})).toEqual({
      num_timesteps: 50,
      timestep_shift: 3,
      cfg_interval: [0.4, 1],
      cfg_renorm_min: 0,
      cfg_renorm_type: 'global',
      noise_level: 0.7,
    });
    expect(familyOptions('bagel', 'load', {})).toMatchObject({ objective: 'sft' });
    expect(() => familyOptions('bagel', 'gen', { num_timesteps: 1 })).toThrow(/num_timesteps/);
    expect(() => familyOptions('bagel', 'load', { objective: 'rl' })).toThrow(/objective/);
  });

  it("system prompts are per task and left to the sidecar (the model's own: upstream's) unless given", () => {
    for (const family of ['janus', 'dimoo']) {
      const o = familyOptions(family, 'load', {});
      expect('und_system_prompt' in o || 'gen_system_prompt' in o).toBe(false);
      expect(familyOptions(family, 'load', { und_system_prompt: '', gen_system_prompt: 'G' })).toMatchObject({
        und_system_prompt: '',
        gen_system_prompt: 'G',
      });
    }
    expect(() => familyOptions('janus', 'load', { system_prompt: '' })).toThrow(/system_prompt/);
  });
});
