/** `pairuni` from source, as bin/pairuni.js runs it from dist/: `node --import tsx tests/ts/cli/_run.ts <command> ...`. */
import { main } from '../../../src/cli/index.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(err);
    process.exitCode = 1;
  },
);
