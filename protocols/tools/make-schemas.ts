/**
 * Writes protocols/schemas/header.schema.json from the zod schemas in src/protocol/header.ts (the
 * TS source of truth). tests/ts/protocol.test.ts fails when the committed file drifts.
 *   npx tsx protocols/tools/make-schemas.ts
 */
import { writeFileSync } from 'node:fs';
import { z } from 'zod';
import { HeaderSchemas } from '../../src/protocol/header.js';

export function headerJsonSchema(): Record<string, unknown> {
  const defs: Record<string, unknown> = {};
  for (const [kind, schema] of Object.entries(HeaderSchemas)) defs[kind] = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' });
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: 'https://pairuni.dev/protocols/v1/header.schema.json',
    title: 'pairuni wire protocol v1: msgpack header map, one schema per message kind (preamble byte 6)',
    $defs: defs,
  };
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  writeFileSync(new URL('../schemas/header.schema.json', import.meta.url), JSON.stringify(headerJsonSchema(), null, 2) + '\n');
  console.log('wrote protocols/schemas/header.schema.json');
}
