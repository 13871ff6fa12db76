/**
 * PairUG output: PairRecord rows (src/data/schemas.ts) as an Arrow IPC file and a JSONL view, plus
 * a stats report. Files are written atomically (util/atomic.ts). Image paths in the output are
 * relative to the output directory; inline image bytes are materialised once under images/ by
 * content hash.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { Field, List, Table, tableToIPC, Utf8, Float64, vectorFromArray } from 'apache-arrow';
import type { Manifest } from '../data/manifest.js';
import { PairRecord, type GenerationRecord, type UnderstandingRecord } from '../data/schemas.js';
import { DataError } from '../errors.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import type { OutPair, SideRef } from './ablations.js';
import type { PairingResult } from './pair.js';

export interface PairInputs {
  u: Manifest<UnderstandingRecord>;
  g: Manifest<GenerationRecord>;
}

/** Why item `index` of `side` cannot serve as an aligned quadruple, or null if it can. */
export function alignableFor(inputs: PairInputs): (side: 'U' | 'G', index: number) => string | null {
  return (side, index) => {
    if (side === 'U')
      return inputs.u.items[index].record.caption ? null : 'no caption (generation prompt) from semantic completion';
    const r = inputs.g.items[index].record;
    const miss = (['question', 'choices', 'answer'] as const).filter((f) => r[f] === undefined);
    return miss.length ? `no ${miss.join('/')} from semantic completion` : null;
  };
}

export function toPairRecords(pairs: OutPair[], inputs: PairInputs, outDir: string): PairRecord[] {
  const imagePath = imagePathResolver(inputs, outDir);
  return pairs.map((p) => {
    const u = understandingSide(inputs, p.u);
    const g = generationSide(inputs, p.g);
    const rec: PairRecord = {
      pair_id:
        p.type === 'aligned' ? `aligned:${p.u.side}/${u.id}` : `${p.type}:${p.u.side}/${u.id}:${p.g.side}/${g.id}`,
      type: p.type,
      s_p: clamp(p.s),
      w_p: p.w, // eq. 3 via pairSet (ablations.ts), the one definition
      u_src: p.u.side,
      u_id: u.id,
      g_src: p.g.side,
      g_id: g.id,
      u_image: imagePath(p.u),
      question: u.question,
      choices: u.choices,
      answer: u.answer,
      g_image: imagePath(p.g),
      prompt: g.prompt,
    };
    const category = g.category ?? u.category;
    if (category !== undefined) rec.category = category;
    return PairRecord.parse(rec);
  });
}

function clamp(s: number): number {
  return Math.min(1, Math.max(-1, s));
}

function understandingSide(
  inputs: PairInputs,
  r: SideRef,
): { id: string; question: string; choices: string[]; answer: string; category?: string } {
  if (r.side === 'U') return inputs.u.items[r.index].record;
  const it = inputs.g.items[r.index];
  const { id, question, choices, answer, category } = it.record;
  if (!question || !choices || !answer)
    throw new DataError(
      `${inputs.g.file} row ${it.row}: G item '${id}' lacks question/choices/answer`,
      inputs.g.file,
      it.row,
    );
  return { id, question, choices, answer, category };
}

function generationSide(inputs: PairInputs, r: SideRef): { id: string; prompt: string; category?: string } {
  if (r.side === 'G') return inputs.g.items[r.index].record;
  const it = inputs.u.items[r.index];
  if (!it.record.caption)
    throw new DataError(
      `${inputs.u.file} row ${it.row}: U item '${it.record.id}' lacks a caption`,
      inputs.u.file,
      it.row,
    );
  return { id: it.record.id, prompt: it.record.caption, category: it.record.category };
}

function imagePathResolver(inputs: PairInputs, outDir: string): (r: SideRef) => string {
  const written = new Map<string, string>();
  return (r) => {
    const it = r.side === 'U' ? inputs.u.items[r.index] : inputs.g.items[r.index];
    if ('path' in it.image) return relative(outDir, it.image.path).split(sep).join('/');
    const bytes = it.image.bytes;
    const hash = createHash('sha256').update(bytes).digest('hex');
    let rel = written.get(hash);
    if (!rel) {
      rel = `images/${hash.slice(0, 32)}${sniffExt(bytes)}`;
      const abs = join(outDir, rel);
      if (!existsSync(abs)) {
        mkdirSync(join(outDir, 'images'), { recursive: true });
        writeFileAtomic(abs, bytes);
      }
      written.set(hash, rel);
    }
    return rel;
  };
}

function sniffExt(b: Uint8Array): string {
  if (b[0] === 0x89 && b[1] === 0x50) return '.png';
  if (b[0] === 0xff && b[1] === 0xd8) return '.jpg';
  if (b[0] === 0x47 && b[1] === 0x49) return '.gif';
  if (b[0] === 0x52 && b[1] === 0x49 && b[8] === 0x57) return '.webp';
  if (b[0] === 0x42 && b[1] === 0x4d) return '.bmp';
  return '.bin';
}

export function pairsTable(records: PairRecord[]): Table {
  const str = (f: (r: PairRecord) => string) => vectorFromArray(records.map(f), new Utf8());
  return new Table({
    pair_id: str((r) => r.pair_id),
    type: str((r) => r.type),
    s_p: vectorFromArray(
      records.map((r) => r.s_p),
      new Float64(),
    ),
    w_p: vectorFromArray(
      records.map((r) => r.w_p),
      new Float64(),
    ),
    u_src: str((r) => r.u_src),
    u_id: str((r) => r.u_id),
    g_src: str((r) => r.g_src),
    g_id: str((r) => r.g_id),
    u_image: str((r) => r.u_image),
    question: str((r) => r.question),
    choices: vectorFromArray(
      records.map((r) => r.choices),
      new List(new Field('item', new Utf8(), false)),
    ),
    answer: str((r) => r.answer),
    g_image: str((r) => r.g_image),
    prompt: str((r) => r.prompt),
    category: vectorFromArray(
      records.map((r) => r.category ?? null),
      new Utf8(),
    ),
  });
}

export interface PairStats {
  ablation: string;
  counts: { total: number; aligned: number; retrieved: number; alignedFromU: number; alignedFromG: number };
  skippedMedoids: { count: number; examples: { cluster: number; side: string; id: string; reason: string }[] };
  similarity: {
    bins: { from: number; to: number; count: number }[];
    mean: number | null;
    min: number | null;
    max: number | null;
    belowZero: number;
  };
  clusters: PairingResult['clusters'];
  retrieval: PairingResult['retrieval'];
  inputs: { u: string; g: string; nU: number; nG: number; dim: number };
  config: PairingResult['config'];
  backend: string;
  timingsMs: PairingResult['timingsMs'];
  features?: Record<string, unknown>;
}

export function pairStats(
  records: PairRecord[],
  res: PairingResult,
  inputs: PairInputs,
  extra: { features?: Record<string, unknown> } = {},
): PairStats {
  const sims = records.filter((r) => r.type === 'retrieved').map((r) => r.s_p);
  const bins = Array.from({ length: 20 }, (_, b) => ({ from: b / 20, to: (b + 1) / 20, count: 0 }));
  for (const s of sims) bins[Math.min(19, Math.max(0, Math.floor(s * 20)))].count++;
  const idOf = (side: 'U' | 'G', i: number) =>
    side === 'U' ? inputs.u.items[i].record.id : inputs.g.items[i].record.id;
  return {
    ablation: res.config.ablation,
    counts: {
      total: records.length,
      aligned: records.filter((r) => r.type === 'aligned').length,
      retrieved: sims.length,
      alignedFromU: records.filter((r) => r.type === 'aligned' && r.u_src === 'U').length,
      alignedFromG: records.filter((r) => r.type === 'aligned' && r.u_src === 'G').length,
    },
    skippedMedoids: {
      count: res.skipped.length,
      examples: res.skipped
        .slice(0, 20)
        .map((s) => ({ cluster: s.cluster, side: s.side, id: idOf(s.side, s.index), reason: s.reason })),
    },
    similarity: {
      bins,
      mean: sims.length ? sims.reduce((a, b) => a + b, 0) / sims.length : null,
      min: sims.length ? Math.min(...sims) : null,
      max: sims.length ? Math.max(...sims) : null,
      belowZero: sims.filter((s) => s < 0).length,
    },
    clusters: res.clusters,
    retrieval: res.retrieval,
    inputs: { u: inputs.u.file, g: inputs.g.file, nU: res.nU, nG: res.nG, dim: res.dim },
    config: res.config,
    backend: res.backend,
    timingsMs: res.timingsMs,
    ...extra,
  };
}

export function formatStats(st: PairStats): string {
  const c = st.clusters;
  const ablation = st.ablation !== 'none';
  // An ablation set is sized against the PairUG run (its budget B); the cluster and retrieval lines describe that run.
  const of = ablation ? 'PairUG run (sets the budget) ' : '';
  const lines = [
    `${ablation ? `Ablation '${st.ablation}'` : 'PairUG'}: ${st.counts.total} pairs = ${st.counts.aligned} aligned (${st.counts.alignedFromU} from U, ${st.counts.alignedFromG} from G) + ${st.counts.retrieved} ${ablation ? 'cross' : 'retrieved'}`,
    `${of}clusters: K=${c.k}, non-empty ${c.nonEmpty}, empty ${c.empty}, largest ${c.largest}, singletons ${c.singletons}, median size ${c.p50}; inertia ${c.inertia.toFixed(2)} after ${c.steps} steps (${c.stop})`,
    `${of}retrieval (${st.retrieval.mode}): ${st.retrieval.queries} G queries over ${st.retrieval.pool} U items, ${st.retrieval.withCandidates} with a candidate ≥ δ, ${st.retrieval.allTaken} found all candidates taken${st.retrieval.refills ? `, ${st.retrieval.refills} lists refilled` : ''}`,
  ];
  if (st.skippedMedoids.count)
    lines.push(
      `skipped medoids (missing completed fields): ${st.skippedMedoids.count}, e.g. ${st.skippedMedoids.examples
        .slice(0, 3)
        .map((e) => `${e.side}/${e.id} (${e.reason})`)
        .join('; ')}`,
    );
  if (st.counts.retrieved) {
    // stats.json's first bin also holds the negative similarities (counted in belowZero); shown apart here.
    const rows = st.similarity.bins.map((b, i) => ({
      label: `${b.from.toFixed(2)}–${b.to.toFixed(2)}`,
      count: i === 0 ? b.count - st.similarity.belowZero : b.count,
    }));
    if (st.similarity.belowZero) rows.unshift({ label: '    < 0.00', count: st.similarity.belowZero });
    const max = Math.max(...rows.map((r) => r.count));
    lines.push(
      `${ablation ? 'pair' : 'retrieved'} similarity (mean ${st.similarity.mean!.toFixed(3)}, min ${st.similarity.min!.toFixed(3)}, max ${st.similarity.max!.toFixed(3)}):`,
    );
    for (const r of rows)
      if (r.count)
        lines.push(
          `  ${r.label} ${String(r.count).padStart(7)} ${'#'.repeat(Math.max(1, Math.round((40 * r.count) / max)))}`,
        );
  }
  return lines.join('\n');
}

export function writePairUG(
  outDir: string,
  records: PairRecord[],
  stats: PairStats,
): { arrow: string; jsonl: string; stats: string } {
  mkdirSync(outDir, { recursive: true });
  const files = {
    arrow: join(outDir, 'pairs.arrow'),
    jsonl: join(outDir, 'pairs.jsonl'),
    stats: join(outDir, 'stats.json'),
  };
  writeFileAtomic(files.arrow, tableToIPC(pairsTable(records), 'file'));
  writeFileAtomic(files.jsonl, records.map((r) => JSON.stringify(r)).join('\n') + (records.length ? '\n' : ''));
  writeJsonAtomic(files.stats, stats);
  return files;
}
