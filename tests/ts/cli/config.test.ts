/**
 * `pairuni train` config files and overrides: YAML or JSON by extension, `--set key.path=value`
 * (JSON values, checked against the schema by path), `--print-config` (the resolved config, every
 * default filled, nothing written). All of it is decided before a sidecar starts, so no sidecar runs here.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { pairuni as run } from './_pairuni.js';

const dir = mkdtempSync(join(tmpdir(), 'pairuni-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** `pairuni ...` in this process: exit status, stdout as one string, stderr lines. */
const pairuni = async (...argv: string[]) => {
  const r = await run(argv);
  return { ...r, out: r.out.join('\n') };
};

const YAML_RUN = `# a small run
data: data/pairs.jsonl
out: runs/a
model:
  path: tiny
  device: cpu
steps: 2
und:
  k: 2
  maxNewTokens: 4
gen: { k: 2, reward: { name: brightness } }
`;
const JSON_RUN = {
  data: 'data/pairs.jsonl',
  out: 'runs/a',
  model: { path: 'tiny', device: 'cpu' },
  steps: 2,
  und: { k: 2, maxNewTokens: 4 },
  gen: { k: 2, reward: { name: 'brightness' } },
};

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

describe('pairuni train --config: YAML or JSON, --set, --print-config', () => {
  it('a YAML and a JSON file resolve to the same config, printed with every default and nothing written', async () => {
    const y = await pairuni('train', '--config', file('run.yaml', YAML_RUN), '--print-config');
    const j = await pairuni('train', '--config', file('run.json', JSON.stringify(JSON_RUN)), '--print-config');
    expect([y.code, j.code, y.err, j.err]).toEqual([0, 0, [], []]);
    expect(() => JSON.parse(y.out)).toThrow(); // YAML in, YAML out
    const fromYaml = parseYaml(y.out);
    expect(fromYaml).toEqual(JSON.parse(j.out));
    expect(fromYaml).toMatchObject({
      data: join(dir, 'data/pairs.jsonl'),
      out: join(dir, 'runs/a'),
      model: { adapter: 'janus', path: join(dir, 'tiny'), trainModules: ['language_model'] },
      mode: 'pairgrpo',
      steps: 2,
      batchPairs: 16,
      und: { k: 2, maxNewTokens: 4, temperature: 1 },
      gen: { k: 2, cfgWeight: 5, reward: { name: 'brightness' } },
      loss: { beta: 0, epsLow: 0.2 },
      optim: { lr: 1e-6 },
      checkpoint: { every: 100, keep: 3 },
      parallel: { parts: 1 },
    });
    expect(readdirSync(dir).sort()).toEqual(['run.json', 'run.yaml']); // no runs/ directory
  });

  it('--set overrides nested numbers, strings and arrays; the fixed flags are --set applied last', async () => {
    const r = await pairuni(
      'train',
      '--config',
      file('set.yaml', YAML_RUN),
      '--print-config',
      '--set',
      'loss.beta=0.04',
      '--set',
      'mode=pair',
      '--set',
      'model.trainModules=["language_model","gen_head"]',
      '--set',
      'und.instruction={question} {choices}',
      '--set',
      'gen={"k":3}',
      '--set',
      'steps=5',
      '--set',
      'data=other/pairs.jsonl',
      '--steps',
      '7',
    );
    expect([r.code, r.err]).toEqual([0, []]);
    const c = parseYaml(r.out);
    expect(c.loss.beta).toBe(0.04);
    expect(c.mode).toBe('pair');
    expect(c.model.trainModules).toEqual(['language_model', 'gen_head']);
    expect(c.und.instruction).toBe('{question} {choices}');
    expect(c.und.k).toBe(2); // the file's sibling keys stay
    expect(c.gen).toMatchObject({ k: 3, reward: { name: 'hps' } }); // an object value replaces the section (defaults refill it)
    expect(c.steps).toBe(7);
    expect(c.data).toBe(join(process.cwd(), 'other/pairs.jsonl')); // as --data: relative to the working directory
  });

  it('an unknown key is refused by name, from --set and from the file, before anything runs', async () => {
    const viaSet = await pairuni('train', '--config', file('ok.yaml', YAML_RUN), '--set', 'loss.betaa=0.04');
    expect(viaSet.code).toBe(1);
    expect(viaSet.err).toEqual([
      'pairuni train: ConfigError [config]: --set loss.betaa: no such config key (loss takes epsLow, epsHigh, beta, agg, mu)',
    ]);
    const deep = await pairuni('train', '--config', join(dir, 'ok.yaml'), '--set', 'los.beta=1');
    expect(deep.code).toBe(1);
    expect(deep.err[0]).toMatch(
      /^pairuni train: ConfigError \[config\]: --set los\.beta: no config key 'los' \(the top level takes data, out, model, /,
    );
    const bad = file('unknown.yaml', `${YAML_RUN}loss:\n  betaa: 0.04\n`);
    const viaFile = await pairuni('train', '--config', bad);
    expect(viaFile.code).toBe(1);
    expect(viaFile.err).toEqual([
      `pairuni train: ConfigError [config]: ${bad} is not a valid training config: loss: Unrecognized key: "betaa"`,
    ]);
    expect(existsSync(join(dir, 'runs'))).toBe(false);
  });

  it('a --set without key=value is bad usage: exit 2, one line', async () => {
    const r = await pairuni('train', '--config', join(dir, 'ok.yaml'), '--set', 'loss.beta');
    expect(r.code).toBe(2);
    expect(r.err).toEqual(["pairuni train: --set takes key.path=value, got 'loss.beta' (see 'pairuni train --help')"]);
  });

  it('a syntax error names the file, line and column in one line', async () => {
    const y = file('broken.yaml', 'data: d\nout: o\nsteps: 2\nsteps: 3\n');
    const ry = await pairuni('train', '--config', y, '--print-config');
    expect(ry.code).toBe(1);
    expect(ry.err).toEqual([
      `pairuni train: ConfigError [config]: cannot parse config ${y}:4:1: Map keys must be unique`,
    ]);
    const j = file('broken.json', '{\n  "data": "d",\n  "out": "o",\n}\n');
    const rj = await pairuni('train', '--config', j, '--print-config');
    expect(rj.code).toBe(1);
    expect(rj.err).toEqual([
      `pairuni train: ConfigError [config]: cannot parse config ${j}:4:1: Expected double-quoted property name`,
    ]);
  });
});
