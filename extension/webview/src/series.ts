/**
 * Step metrics kept column by column in growable typed arrays, and the
 * downsampling that keeps extremes: for each pixel-wide bucket of x, the
 * first, last, lowest and highest point of the main series survive, so
 * spikes stay visible at any zoom. Pure, DOM-free.
 */

/** A column of numbers; NaN marks a missing value. */
export class Column {
  data: Float64Array;
  length = 0;
  constructor(capacity = 1024) {
    this.data = new Float64Array(capacity);
  }
  push(v: number): void {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = v;
  }
  view(): Float64Array {
    return this.data.subarray(0, this.length);
  }
}

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : Number.NaN);

/** The step metrics of one run, ordered by step. */
export class StepTable {
  readonly columns = new Map<string, Column>();
  constructor(readonly metrics: readonly string[]) {
    this.columns.set('step', new Column());
    for (const m of metrics) this.columns.set(m, new Column());
  }

  get length(): number {
    return this.columns.get('step')!.length;
  }

  get lastStep(): number {
    const s = this.columns.get('step')!;
    return s.length ? s.data[s.length - 1] : Number.NEGATIVE_INFINITY;
  }

  /**
   * Append columnar rows (a `steps` payload or query columns); rows whose step
   * is not past the last one are skipped, so history and live data can overlap.
   * Returns the number of rows added.
   */
  append(cols: Record<string, readonly unknown[]>): number {
    const steps = cols.step ?? [];
    let added = 0;
    for (let i = 0; i < steps.length; i++) {
      const s = num(steps[i]);
      if (!(s > this.lastStep)) continue;
      this.columns.get('step')!.push(s);
      for (const m of this.metrics) this.columns.get(m)!.push(num(cols[m]?.[i]));
      added++;
    }
    return added;
  }

  get(name: string): Float64Array {
    return (this.columns.get(name) ?? new Column(0)).view();
  }

  /**
   * A new table with the rows of steps [lo, hi] replaced by `detail` (for
   * example full-resolution rows read when zooming into downsampled history).
   */
  withDetail(lo: number, hi: number, detail: Record<string, readonly unknown[]>): StepTable {
    const out = new StepTable(this.metrics);
    const step = this.get('step');
    const names = ['step', ...this.metrics];
    const slice = (from: number, to: number) => Object.fromEntries(names.map((n) => [n, Array.from(this.get(n).subarray(from, to))]));
    const a = lowerBound(step, lo);
    const b = lowerBound(step, hi + Number.EPSILON * Math.abs(hi) + 1e-9);
    out.append(slice(0, a));
    out.append(detail);
    out.append(slice(b, step.length));
    return out;
  }
}

/** First index with x[i] >= v (x ascending). */
export function lowerBound(x: ArrayLike<number>, v: number, lo = 0, hi = x.length): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (x[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The indices to draw of x[from..to) so that at most about 4 points per
 * bucket remain: per bucket the first, the last, and the min and max of
 * `key` (NaNs ignored). Everything is kept when it already fits.
 *
 * @param buckets usually the plot's width in pixels.
 */
export function extremeIndices(x: ArrayLike<number>, key: ArrayLike<number>, from: number, to: number, buckets: number): Int32Array {
  const n = to - from;
  if (n <= 0) return new Int32Array(0);
  if (n <= buckets * 4) {
    const all = new Int32Array(n);
    for (let i = 0; i < n; i++) all[i] = from + i;
    return all;
  }
  const x0 = x[from];
  const span = x[to - 1] - x0 || 1;
  const out = new Int32Array(buckets * 4 + 4);
  let k = 0;
  let i = from;
  for (let b = 0; b < buckets && i < to; b++) {
    const end = b === buckets - 1 ? to : lowerBound(x, x0 + (span * (b + 1)) / buckets, i, to);
    if (end <= i) continue;
    let lo = -1;
    let hi = -1;
    for (let j = i; j < end; j++) {
      const v = key[j];
      if (v !== v) continue; // NaN
      if (lo < 0 || v < key[lo]) lo = j;
      if (hi < 0 || v > key[hi]) hi = j;
    }
    const picks = [i, lo, hi, end - 1].filter((p) => p >= 0).sort((a, b) => a - b);
    let prev = -1;
    for (const p of picks) if (p !== prev) out[k++] = prev = p;
    i = end;
  }
  return out.subarray(0, k);
}

/** Gather `cols` at `idx`, NaN turned into null (what the chart library draws as a gap). */
export function gather(cols: readonly Float64Array[], idx: Int32Array): (number | null)[][] {
  return cols.map((c) => {
    const out = new Array<number | null>(idx.length);
    for (let i = 0; i < idx.length; i++) {
      const v = c[idx[i]];
      out[i] = v === v ? v : null;
    }
    return out;
  });
}

/**
 * Merge extra points (for example the validation loss at the step each epoch
 * ended) into downsampled columns sharing one x array: each extra series gets
 * its values at its x positions and null elsewhere.
 */
export function mergePoints(
  x: (number | null)[],
  ys: (number | null)[][],
  extra: { x: number[]; y: (number | null)[] }[],
): (number | null)[][] {
  const xs = new Set<number>();
  for (const v of x) if (v !== null) xs.add(v);
  for (const e of extra) for (const v of e.x) xs.add(v);
  if (!extra.some((e) => e.x.length)) return [x, ...ys, ...extra.map(() => x.map(() => null))];
  const allX = [...xs].sort((a, b) => a - b);
  const pos = new Map<number, number>();
  allX.forEach((v, i) => pos.set(v, i));
  const cols = [...ys, ...extra.map(() => [] as (number | null)[])].map(() => new Array<number | null>(allX.length).fill(null));
  x.forEach((v, i) => {
    if (v === null) return;
    const p = pos.get(v)!;
    ys.forEach((y, s) => (cols[s][p] = y[i]));
  });
  extra.forEach((e, s) => e.x.forEach((v, i) => (cols[ys.length + s][pos.get(v)!] = e.y[i])));
  return [allX, ...cols];
}

/** CSV of columns (header row, then one line per row), for "save data". */
export function toCsv(names: readonly string[], cols: readonly ArrayLike<number | null>[]): string {
  const n = cols.length ? cols[0].length : 0;
  const lines = [names.join(',')];
  for (let i = 0; i < n; i++) {
    lines.push(cols.map((c) => {
      const v = c[i];
      return v === null || v === undefined || Number.isNaN(v) ? '' : String(v);
    }).join(','));
  }
  return lines.join('\n') + '\n';
}

/** Fractional epochs for steps, from the steps at which each epoch ended (ascending). */
export function stepsToEpochs(steps: ArrayLike<number>, epochEnds: readonly number[]): Float64Array {
  const out = new Float64Array(steps.length);
  const per = epochEnds.length ? epochEnds[epochEnds.length - 1] / epochEnds.length : 0;
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i];
    const e = lowerBound(epochEnds, s);
    const start = e === 0 ? 0 : epochEnds[e - 1];
    const end = e < epochEnds.length ? epochEnds[e] : start + (per || 1);
    out[i] = e + (end > start ? (s - start) / (end - start) : 0);
  }
  return out;
}

/** Samples whose loss falls in [lo, hi], estimated from a histogram (bins partly inside count in proportion). */
export function countInRange(edges: readonly number[], counts: readonly number[], lo: number, hi: number): number {
  let n = 0;
  for (let i = 0; i < counts.length; i++) {
    const a = edges[i];
    const b = edges[i + 1];
    const overlap = Math.min(b, hi) - Math.max(a, lo);
    if (overlap <= 0) continue;
    n += b > a ? (counts[i] * overlap) / (b - a) : counts[i];
  }
  return Math.round(n);
}
