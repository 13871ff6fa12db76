#!/usr/bin/env node
/**
 * Checks every relative link in README.md and docs/**\/*.md: the target file or folder must exist,
 * and a `#anchor` into a Markdown file must name one of its headings (GitHub's slugs). External
 * links (http:, https:, mailto:) are not fetched. Links inside code (fenced blocks, `spans`) are text.
 *
 *   node scripts/check-links.mjs [root]     exit 0: all resolve; 1: each broken link on its own line
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The Markdown files checked under `root`: README.md and everything under docs/. */
export function markdownFiles(root) {
  const out = [];
  if (existsSync(join(root, 'README.md'))) out.push(join(root, 'README.md'));
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.md')) out.push(p);
    }
  };
  if (existsSync(join(root, 'docs'))) walk(join(root, 'docs'));
  return out;
}

/** The text outside fenced code blocks and inline code spans, line numbers kept. */
function proseLines(text) {
  let fence = null;
  return text.split('\n').map((line) => {
    const m = /^\s*(`{3,}|~{3,})/.exec(line);
    if (m) {
      if (fence === null) fence = m[1][0];
      else if (m[1][0] === fence) fence = null;
      return '';
    }
    return fence === null ? line.replace(/(`+)[^`]*?\1/g, '') : '';
  });
}

/**
 * GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered; plus
 * explicit HTML anchors (`<a id="x">`, as the generated API reference in docs/api/ writes them).
 */
export function anchors(text) {
  const seen = new Map();
  const out = new Set();
  let fence = null;
  for (const line of text.split('\n')) {
    const f = /^\s*(`{3,}|~{3,})/.exec(line);
    if (f) {
      if (fence === null) fence = f[1][0];
      else if (f[1][0] === fence) fence = null;
      continue;
    }
    if (fence === null)
      for (const a of line.replace(/(`+)[^`]*?\1/g, '').matchAll(/<a\s+(?:id|name)="([^"]+)"/g))
        out.add(a[1].toLowerCase());
    const h = fence === null && /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!h) continue;
    const slug = h[1]
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    out.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return out;
}

const EXTERNAL = /^[a-z][a-z0-9+.-]*:/i;

/** Broken links of one file: `{ file, line, target, reason }`. */
export function checkFile(file, root) {
  const text = readFileSync(file, 'utf8');
  const broken = [];
  const lines = proseLines(text);
  lines.forEach((line, i) => {
    const targets = [
      ...[...line.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]),
      ...[...line.matchAll(/^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$/g)].map((m) => m[1]),
    ];
    for (const target of targets) {
      if (!target || EXTERNAL.test(target)) continue;
      const [pathPart, anchor] = target.split('#', 2);
      const dest = pathPart ? resolve(dirname(file), decodeURI(pathPart)) : file;
      const where = { file: relative(root, file), line: i + 1, target };
      if (!existsSync(dest)) {
        broken.push({ ...where, reason: `${relative(root, dest) || dest} does not exist` });
        continue;
      }
      if (
        anchor &&
        dest.endsWith('.md') &&
        statSync(dest).isFile() &&
        !anchors(readFileSync(dest, 'utf8')).has(anchor.toLowerCase())
      ) {
        broken.push({ ...where, reason: `${relative(root, dest)} has no heading #${anchor}` });
      }
    }
  });
  return broken;
}

/** Broken links of every checked file under `root`. */
export function checkLinks(root) {
  return markdownFiles(root).flatMap((f) => checkFile(f, root));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..'));
  const files = markdownFiles(root);
  const broken = files.flatMap((f) => checkFile(f, root));
  for (const b of broken) console.error(`${b.file}:${b.line}: broken link ${b.target}: ${b.reason}`);
  if (broken.length) {
    console.error(`check-links: ${broken.length} broken link(s) in ${files.length} files`);
    process.exit(1);
  }
  console.log(`check-links: ${files.length} files, every relative link resolves`);
}
