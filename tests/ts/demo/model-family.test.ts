/** Which family a model directory is, for `demo` and `samples` when `--family` is not given. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { modelFamily } from '../../../src/contract/model-family.js';

const root = mkdtempSync(join(tmpdir(), 'pairuni-family-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const dir = (name: string, files: Record<string, string>) => {
  const d = join(root, name);
  mkdirSync(d);
  for (const [f, text] of Object.entries(files)) writeFileSync(join(d, f), text);
  return d;
};

describe('modelFamily', () => {
  it('reads the model card, then config.json, then a Bagel layout, else takes Janus', () => {
    expect(
      modelFamily(dir('card', { 'pairuni_model.json': '{"family":"dimoo"}', 'config.json': '{"model_type":"janus"}' }))
        .family,
    ).toBe('dimoo');
    expect(modelFamily(dir('config', { 'config.json': '{"model_type":"dimoo"}' }))).toEqual({
      family: 'dimoo',
      source: 'config.json: model_type "dimoo"',
    });
    const bagel = dir('bagel', { 'llm_config.json': '{}', 'vit_config.json': '{}', 'ae.safetensors': '' });
    expect(modelFamily(bagel)).toEqual({
      family: 'bagel',
      source: 'a Bagel directory (llm_config.json, vit_config.json, ae.safetensors)',
    });
    // Two of Bagel's three files are not a Bagel directory.
    expect(modelFamily(dir('partial', { 'llm_config.json': '{}', 'vit_config.json': '{}' })).family).toBe('janus');
    expect(modelFamily(dir('empty', {})).source).toMatch(/taken as Janus/);
  });
});
