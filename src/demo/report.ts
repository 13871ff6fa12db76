/**
 * The demo's report: Markdown with inline SVG curves, so it renders anywhere (GitHub, VS Code,
 * a browser) without a plotting dependency.
 */

export interface Series {
  name: string;
  points: Array<[number, number]>;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];

/** A small line chart as an SVG string. */
export function lineChart(title: string, series: Series[], opts: { width?: number; height?: number; yLabel?: string } = {}): string {
  const W = opts.width ?? 560;
  const H = opts.height ?? 240;
  const m = { l: 48, r: 140, t: 24, b: 32 };
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (all.length === 0) return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="40"><text x="4" y="20">${esc(title)}: no data</text></svg>`;
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0 || 1)) * (W - m.l - m.r);
  const sy = (y: number) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<text x="${m.l}" y="14" font-weight="bold">${esc(title)}</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="#888"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="#888"/>`,
  ];
  for (const t of [0, 0.5, 1]) {
    const y = y0 + t * (y1 - y0);
    parts.push(`<text x="${m.l - 4}" y="${sy(y) + 4}" text-anchor="end">${fmt(y)}</text>`);
    parts.push(`<line x1="${m.l}" y1="${sy(y)}" x2="${W - m.r}" y2="${sy(y)}" stroke="#eee"/>`);
  }
  parts.push(`<text x="${m.l}" y="${H - 10}">${fmt(x0)}</text><text x="${W - m.r}" y="${H - 10}" text-anchor="end">${fmt(x1)}</text>`);
  if (opts.yLabel) parts.push(`<text x="${W - m.r}" y="${H - 10}" dx="-40" text-anchor="end">${esc(opts.yLabel)}</text>`);
  series.forEach((s, i) => {
    const c = PALETTE[i % PALETTE.length];
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (pts.length) parts.push(`<polyline fill="none" stroke="${c}" stroke-width="1.5" points="${pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ')}"/>`);
    parts.push(`<rect x="${W - m.r + 10}" y="${m.t + i * 16}" width="10" height="10" fill="${c}"/><text x="${W - m.r + 24}" y="${m.t + i * 16 + 9}">${esc(s.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('');
}

/** Moving average, so noisy per-step rewards show their trend. */
export function smooth(points: Array<[number, number]>, window: number): Array<[number, number]> {
  return points.map(([x], i) => {
    const lo = Math.max(0, i - window + 1);
    const slice = points.slice(lo, i + 1).map((p) => p[1]);
    return [x, slice.reduce((a, b) => a + b, 0) / slice.length];
  });
}

export function mdTable(header: string[], rows: Array<Array<string | number>>): string {
  const line = (cells: Array<string | number>) => `| ${cells.map((c) => (typeof c === 'number' ? fmt(c) : c)).join(' | ')} |`;
  return [line(header), `|${header.map(() => '---').join('|')}|`, ...rows.map(line)].join('\n');
}

export function meanStd(xs: number[]): { mean: number; std: number } {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, std };
}

export function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x)) return String(x);
  return Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toFixed(3);
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
