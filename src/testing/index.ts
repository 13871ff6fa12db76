/**
 * `pairuni/testing`: small, self-made inputs for a project's own tests and examples, with no downloads
 * and no GPU. A tiny PairUG file of coloured squares (`writeTinyPairUG`), tiny random-init model
 * directories of each family built by the sidecar (`buildTinyJanus`, `buildTinyDimoo`,
 * `buildTinyBagel`, `buildTinyModel`), a PNG encoder for fixture images, and a local scripted
 * stand-in for an OpenAI-compatible endpoint (`startScriptedServer`) so the completer runs offline.
 *
 * ```ts
 * import { Sidecar, parseTrainConfig, train } from 'pairuni';
 * import { buildTinyJanus, writeTinyPairUG } from 'pairuni/testing';
 *
 * const data = writeTinyPairUG('/tmp/t/data', 8);
 * const sc = await Sidecar.spawn({ threads: 1 });
 * const model = await buildTinyJanus(sc, '/tmp/t/tiny-janus');
 * await sc.close();
 * await train(parseTrainConfig({ data, out: '/tmp/t/run', model: { path: model, device: 'cpu' }, steps: 2 }));
 * ```
 *
 * @module pairuni/testing
 */
export {
  buildTinyBagel,
  buildTinyDimoo,
  buildTinyJanus,
  buildTinyModel,
  encodePng,
  writeTinyPairUG,
} from '../train/fixtures.js';
export {
  startScriptedServer,
  type ScriptedServer,
  type ScriptedHandler,
  type ScriptedReply,
  type ScriptedRequest,
} from '../completion/scripted-server.js';
