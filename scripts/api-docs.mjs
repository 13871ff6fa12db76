#!/usr/bin/env node
/**
 * The API reference of `pairuni` and `pairuni/protocol` (docs/api/, TypeDoc + typedoc-plugin-markdown,
 * options in typedoc.json). Every export, and every own property of an exported interface or class,
 * must carry a doc comment: each one without is named (`pairuni.Foo (Variable), defined in
 * pairuni/src/x.ts, does not have any documentation`), and any TypeDoc warning fails the run (a type
 * the API uses but does not export must be exported or listed in typedoc.json's intentionallyNotExported).
 *
 *   node scripts/api-docs.mjs           regenerate docs/api/
 *   node scripts/api-docs.mjs --check   validate, render to a temporary folder and compare with docs/api/:
 *                                       exit 1 on a warning or on drift (names the files that differ)
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Application, ReflectionKind } from 'typedoc';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const committed = join(root, 'docs', 'api');
const check = process.argv.includes('--check');

function files(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else out.push(relative(dir, join(d, e.name)));
    }
  };
  try {
    walk(dir);
  } catch (e) {
    if (e.code !== 'ENOENT') throw e;
  }
  return out.sort();
}

/**
 * TypeDoc's `notDocumented` check covers exports, methods and accessors but not properties: asking it
 * for those would also flag every member of the inferred zod and op-catalogue types. So the own
 * properties of exported interfaces and classes (fields of options, results, errors) are checked here.
 */
function undocumentedProperties(project) {
  const out = [];
  for (const r of project.getReflectionsByKind(ReflectionKind.Property)) {
    if (!r.parent?.kindOf(ReflectionKind.Interface | ReflectionKind.Class) || r.inheritedFrom || r.hasComment())
      continue;
    const id = project.getSymbolIdFromReflection(r);
    const where = id ? `${id.packageName}/${id.packagePath}` : '?';
    out.push(`${r.getFriendlyFullName()} (Property), defined in ${where}, does not have any documentation`);
  }
  return out;
}

function drift(fresh) {
  const a = new Set(files(committed));
  const b = new Set(files(fresh));
  const out = [];
  for (const f of b) if (!a.has(f)) out.push(`missing: docs/api/${f}`);
  for (const f of a) if (!b.has(f)) out.push(`stale (no longer generated): docs/api/${f}`);
  for (const f of b)
    if (a.has(f) && !readFileSync(join(fresh, f)).equals(readFileSync(join(committed, f))))
      out.push(`differs: docs/api/${f}`);
  return out;
}

async function main() {
  process.chdir(root);
  const out = check ? mkdtempSync(join(tmpdir(), 'pairuni-api-')) : committed;
  try {
    const app = await Application.bootstrapWithPlugins({ out });
    const project = await app.convert();
    if (!project) return 1;
    app.validate(project);
    for (const line of undocumentedProperties(project)) app.logger.error(line);
    if (app.logger.hasErrors() || app.logger.hasWarnings()) {
      console.error(
        `api-docs: ${app.logger.errorCount} error(s), ${app.logger.warningCount} warning(s) above; every export of pairuni and pairuni/protocol needs a doc comment`,
      );
      return 1;
    }
    await app.generateOutputs(project);
    if (app.logger.hasErrors() || app.logger.hasWarnings()) return 1;
    if (!check) return 0;
    const diffs = drift(out);
    if (diffs.length) {
      console.error(
        `api-docs: docs/api/ is out of date; run \`npm run docs:api\` and commit:\n  ${diffs.join('\n  ')}`,
      );
      return 1;
    }
    console.log(`api-docs: ${files(out).length} file(s) in docs/api/ up to date, every export documented`);
    return 0;
  } finally {
    if (check) rmSync(out, { recursive: true, force: true });
  }
}

process.exitCode = await main();
