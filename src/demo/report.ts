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
export function lineChart(
  title: string,
  series: Series[],
  opts: { width?: number; height?: number; yLabel?: string } = {},
): string {
  const W = opts.width ?? 560;
  const H = opts.height ?? 240;
  const m = { l: 48, r: 140, t: 24, b: 32 };
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (all.length === 0)
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="40"><text x="4" y="20">${esc(title)}: no data</text></svg>`;
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
  parts.push(
    `<text x="${m.l}" y="${H - 10}">${fmt(x0)}</text><text x="${W - m.r}" y="${H - 10}" text-anchor="end">${fmt(x1)}</text>`,
  );
  if (opts.yLabel)
    parts.push(`<text x="${W - m.r}" y="${H - 10}" dx="-40" text-anchor="end">${esc(opts.yLabel)}</text>`);
  series.forEach((s, i) => {
    const c = PALETTE[i % PALETTE.length];
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (pts.length)
      parts.push(
        `<polyline fill="none" stroke="${c}" stroke-width="1.5" points="${pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ')}"/>`,
      );
    parts.push(
      `<rect x="${W - m.r + 10}" y="${m.t + i * 16}" width="10" height="10" fill="${c}"/><text x="${W - m.r + 24}" y="${m.t + i * 16 + 9}">${esc(s.name)}</text>`,
    );
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
  const line = (cells: Array<string | number>) =>
    `| ${cells.map((c) => (typeof c === 'number' ? fmt(c) : c)).join(' | ')} |`;
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

/** A mean with its two-sided confidence interval from the t-distribution (n - 1 degrees of freedom). */
export interface MeanCI {
  n: number;
  mean: number;
  /** Half-width: the interval is mean ± half (NaN with fewer than two values). */
  half: number;
  lo: number;
  hi: number;
}

export function meanCI(xs: number[], level = 0.95): MeanCI {
  const { mean, std } = meanStd(xs);
  const n = xs.length;
  const half = n > 1 ? tQuantile(1 - (1 - level) / 2, n - 1) * (std / Math.sqrt(n)) : NaN;
  return { n, mean, half, lo: mean - half, hi: mean + half };
}

/**
 * The paired difference a − b over the keys (seeds) present in both, with its t-interval: pairing by
 * seed removes what the two arms share (the seed's data order and sampling), so it is tighter than
 * comparing two independent means.
 */
export function pairedDiffCI(
  a: Record<string | number, number>,
  b: Record<string | number, number>,
  level = 0.95,
): MeanCI {
  const keys = Object.keys(a).filter((k) => k in b);
  return meanCI(
    keys.map((k) => a[k] - b[k]),
    level,
  );
}

/** "0.512 ± 0.031 [0.481, 0.543]" (or just the mean when there is no interval). */
export function fmtCI(c: MeanCI, digits = 3, signed = false): string {
  const f = (x: number) => `${signed && x >= 0 ? '+' : ''}${x.toFixed(digits)}`;
  return Number.isFinite(c.half)
    ? `${f(c.mean)} ± ${c.half.toFixed(digits)} [${f(c.lo)}, ${f(c.hi)}]`
    : `${f(c.mean)} (n = ${c.n}, no interval)`;
}

/** The p-quantile of Student's t with `df` degrees of freedom (bisection on the CDF). */
export function tQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1) || !(df > 0))
    throw new RangeError(`tQuantile: need 0 < p < 1 and df > 0, got p=${p}, df=${df}`);
  if (p < 0.5) return -tQuantile(1 - p, df);
  let lo = 0;
  let hi = 1;
  while (tCdf(hi, df) < p) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-12 * hi; i++) {
    const mid = (lo + hi) / 2;
    if (tCdf(mid, df) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** P(T ≤ t) for Student's t: 1 − ½·I_{df/(df+t²)}(df/2, ½) for t ≥ 0. */
export function tCdf(t: number, df: number): number {
  const tail = 0.5 * regIncBeta(df / (df + t * t), df / 2, 0.5);
  return t >= 0 ? 1 - tail : tail;
}

/** Regularised incomplete beta I_x(a, b) by its continued fraction (Lentz), using the symmetry for convergence. */
function regIncBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x));
  if (x > (a + 1) / (a + b + 2)) return 1 - regIncBeta(1 - x, b, a);
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  d = 1 / (Math.abs(d) < tiny ? tiny : d);
  let f = d;
  for (let m = 1; m <= 300; m++) {
    for (const num of [
      (m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m)),
      -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1)),
    ]) {
      d = 1 + num * d;
      d = 1 / (Math.abs(d) < tiny ? tiny : d);
      c = 1 + num / c;
      if (Math.abs(c) < tiny) c = tiny;
      f *= c * d;
    }
    if (Math.abs(c * d - 1) < 1e-15) break;
  }
  return (front * f) / a;
}

/** ln Γ(x) for x > 0 (Lanczos, g = 7). */
function logGamma(x: number): number {
  const g = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let s = g[0];
  for (let i = 1; i < 9; i++) s += g[i] / (x + i);
  const t = x + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(s);
}
