/** `pairuni keys NAME [...]`: CURVE key pairs for remote ranks and their controller (src/sidecar/curve.ts). */
import { parseArgs } from 'node:util';
import { writeKeyPair } from '../../sidecar/curve.js';

export const summary = 'generate CURVE key pairs (NAME.key, NAME.pub) for ranks on other hosts';

const HELP = `usage: pairuni keys NAME [NAME ...]

Writes NAME.key (public + secret key, mode 0600; keep it on that host) and NAME.pub (the public key,
to hand to the other side) for each NAME, e.g. \`pairuni keys controller rank-host2\`:
  controller:  Sidecar.attach({ endpoint: 'tcp://0.0.0.0:5555', curve: { key: 'controller.key', allow: ['rank-host2.pub'] } })
  ranks:       torchrun ... -m pairuni_sidecar --connect tcp://CTRL:5555 --curve-key rank-host2.key --curve-server controller.pub
Refuses to overwrite existing files.`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { help: { type: 'boolean', short: 'h', default: false } },
    allowPositionals: true,
    strict: true,
  });
  if (values.help || positionals.length === 0) {
    console.log(HELP);
    return values.help ? 0 : 2;
  }
  for (const name of positionals) {
    const { keyFile, pubFile } = writeKeyPair(name);
    console.log(`${keyFile} (secret, 0600)  ${pubFile} (public)`);
  }
  return 0;
}
