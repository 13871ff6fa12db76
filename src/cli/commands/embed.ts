/** `pairuni embed`: embed the images of a U and a G manifest into the feature cache. */
import { parseArgs } from 'node:util';
import { AbortedError } from '../../errors.js';
import { embedManifests } from '../../pairing/pipeline.js';
import { onInterrupt } from '../../util/interrupt.js';
import { MANIFEST_HELP, MANIFEST_OPTIONS, manifestOptions, missingFlags, stageBars, usageError } from '../options.js';

export const summary = 'embed U/G manifest images with a backbone into the feature cache (resumable)';

const HELP = `usage: pairuni embed --u U_MANIFEST --g G_MANIFEST [--backbone resnet50 --weights resnet50.pth] [options]

Embeds every image once (keyed by content hash + backbone) into the feature cache; a rerun or an
interrupted run embeds only what is missing. \`pairuni pair\` reads the same cache.

${MANIFEST_HELP}`;

export async function run(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options: MANIFEST_OPTIONS, allowPositionals: false });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const missing = missingFlags(v, ['u', 'g']);
  if (missing) return usageError('embed', missing);
  // Everything is validated, and every path made absolute against the user's working directory,
  // before any work starts.
  const opts = manifestOptions(v);
  const { signal, dispose } = onInterrupt({ message: 'pairuni embed: finishing the current batch and saving' });
  try {
    const r = await embedManifests({
      ...opts,
      signal,
      onProgress: stageBars(v.quiet),
    });
    console.log(
      `embedded ${r.embedded} images, ${r.cached} from cache (${r.u.items.length} U + ${r.g.items.length} G, ${r.dim}-d, backbone ${r.key})`,
    );
    return 0;
  } catch (e) {
    if (e instanceof AbortedError) {
      console.error(`pairuni embed: ${e.message}; rerun the same command to continue`);
      return 130;
    }
    throw e;
  } finally {
    dispose();
  }
}
