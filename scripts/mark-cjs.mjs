#!/usr/bin/env node
// The CommonJS build (tsconfig.cjs.json → dist/cjs) sits inside a "type": "module" package; this
// package.json makes Node read its .js files as CommonJS.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

writeFileSync(
  join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cjs', 'package.json'),
  '{ "type": "commonjs" }\n',
);
