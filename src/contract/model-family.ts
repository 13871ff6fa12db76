/** Which family a model directory is, for commands given a model path without a family. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FAMILIES } from './families/index.js';

const readJson = <T>(path: string): T => JSON.parse(readFileSync(path, 'utf8')) as T;

/** A model directory's family: its model card's `family`, else a built-in family its config.json's `model_type` names, else Janus. */
export function modelFamily(model: string): { family: string; source: string } {
  const cardPath = join(model, 'pairuni_model.json');
  const card = existsSync(cardPath) ? readJson<{ family?: unknown }>(cardPath) : {};
  if (typeof card.family === 'string')
    return { family: card.family, source: `pairuni_model.json: family "${card.family}"` };
  let type: unknown;
  try {
    type = readJson<{ model_type?: unknown }>(join(model, 'config.json')).model_type;
  } catch {
    /* an unreadable config.json is the model loader's to report, by name */
  }
  if (typeof type === 'string' && Object.hasOwn(FAMILIES, type))
    return { family: type, source: `config.json: model_type "${type}"` };
  // A BAGEL-7B-MoT directory has no config.json: its LLM, ViT and VAE files name it.
  const bagel = ['llm_config.json', 'vit_config.json', 'ae.safetensors'];
  if (bagel.every((f) => existsSync(join(model, f))))
    return { family: 'bagel', source: `a Bagel directory (${bagel.join(', ')})` };
  return { family: 'janus', source: 'no family in pairuni_model.json or config.json: taken as Janus' };
}
