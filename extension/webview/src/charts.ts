/**
 * The live step charts (loss, learning rate, gradient norm, throughput,
 * memory), drawn with uPlot. Data stays at full resolution in a StepTable;
 * each frame draws only the extremes of each pixel bucket of the visible
 * range, so a run of a million steps stays smooth. Drag to zoom, double-click
 * or Escape to reset, arrows to pan, +/- to zoom; x in steps or epochs.
 */
import uPlot from 'uplot';
import type { Overlay } from './shownRun';
import { StepTable, extremeIndices, gather, lowerBound, mergePoints, stepsToEpochs, toCsv } from './series';
import { palette } from './theme';

export interface ChartSpec {
  id: string;
  title: string;
  series: { key: string; label: string }[];
  testid?: string;
}

export const STEP_METRICS = ['epoch', 'loss', 'lr', 'grad_norm', 'samples_per_s', 'rss_mb', 'gpu_mem_mb'];

export const CHARTS: ChartSpec[] = [
  { id: 'loss', title: 'Loss', series: [{ key: 'loss', label: 'train loss' }], testid: 'loss-chart' },
  { id: 'lr', title: 'Learning rate', series: [{ key: 'lr', label: 'lr' }] },
  { id: 'grad', title: 'Gradient norm', series: [{ key: 'grad_norm', label: 'grad norm' }] },
  { id: 'speed', title: 'Throughput (samples/s)', series: [{ key: 'samples_per_s', label: 'samples/s' }] },
  { id: 'memory', title: 'Memory (MB)', series: [{ key: 'rss_mb', label: 'RSS' }, { key: 'gpu_mem_mb', label: 'GPU' }] },
];

/** uPlot's columns: x (steps are never missing, a gap would be NaN), then the series with their gaps. */
function aligned(cols: (number | null)[][]): uPlot.AlignedData {
  const [x = [], ...ys] = cols;
  return [x.map((v) => v ?? Number.NaN), ...ys];
}

export class StepCharts {
  table = new StepTable(STEP_METRICS);
  overlays: Overlay[] = [];
  epochEnds: number[] = [];
  xMode: 'step' | 'epoch' = 'step';
  /** The visible x range when zoomed, in the current x unit. */
  private zoom: [number, number] | null = null;
  private plots = new Map<string, uPlot>();
  private boxes = new Map<string, HTMLElement>();
  private internal = false;
  private pending = 0;
  /** Called when the user zooms to a range of steps (history may hold more detail there). */
  onZoom: ((range: [number, number] | null) => void) | undefined;
  /** Called after each drawn frame with the number of points drawn (benchmarks listen). */
  onDrawn: ((points: number) => void) | undefined;

  constructor(private readonly root: HTMLElement) {
    const p = palette();
    for (const spec of CHARTS) {
      const box = document.createElement('section');
      box.className = 'chart';
      box.tabIndex = 0;
      box.setAttribute('aria-label', `${spec.title} chart: drag to zoom, arrows to pan, plus and minus to zoom, Escape to reset`);
      if (spec.testid) box.dataset.testid = spec.testid;
      const head = document.createElement('header');
      const h = document.createElement('h3');
      h.textContent = spec.title;
      const png = button('PNG', `Save the ${spec.title} chart as PNG`, () => this.savePng(spec.id));
      const csv = button('CSV', `Save the ${spec.title} data as CSV`, () => this.saveCsv(spec));
      png.dataset.testid = `${spec.id}-png`;
      csv.dataset.testid = `${spec.id}-csv`;
      head.append(h, png, csv);
      const plotEl = document.createElement('div');
      box.append(head, plotEl);
      root.append(box);
      const extra = spec.id === 'loss' ? ['val loss', 'test loss'] : [];
      const series: uPlot.Series[] = [
        { label: 'x' },
        ...spec.series.map((s, i) => ({ label: s.label, stroke: p.series[i], width: 1.25, spanGaps: true, points: { show: false } })),
        ...extra.map((label, i) => ({
          label,
          stroke: p.series[i + 1],
          width: 0,
          spanGaps: false,
          points: { show: true, size: 7, fill: p.series[i + 1] },
        })),
      ];
      const axis = { stroke: p.fg, grid: { stroke: p.grid, width: 1 }, ticks: { stroke: p.grid } };
      const plot = new uPlot(
        {
          width: Math.max(200, plotEl.clientWidth || 400),
          height: 170,
          series,
          scales: { x: { time: false } },
          axes: [{ ...axis, label: undefined }, { ...axis, size: 60 }],
          legend: { live: true },
          cursor: { drag: { x: true, y: false }, sync: { key: 'onthefly-steps' } },
          hooks: { setScale: [(u, key) => key === 'x' && this.onScale(u)] },
        },
        aligned([[], ...series.slice(1).map(() => [])]),
        plotEl,
      );
      plot.over.addEventListener('dblclick', () => this.setZoom(null));
      box.addEventListener('keydown', (e) => this.onKey(e));
      box.addEventListener('wheel', (e) => this.onWheel(e, plot), { passive: false });
      this.plots.set(spec.id, plot);
      this.boxes.set(spec.id, box);
    }
    new ResizeObserver(() => this.resize()).observe(root);
  }

  /** Forget all data (another run or session was chosen). */
  reset(): void {
    this.table = new StepTable(STEP_METRICS);
    this.overlays = [];
    this.epochEnds = [];
    this.zoom = null;
    this.request();
  }

  setXMode(mode: 'step' | 'epoch'): void {
    this.xMode = mode;
    this.zoom = null;
    this.request();
  }

  /** Draw on the next animation frame (several updates in one frame draw once). */
  request(): void {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      this.draw();
    });
  }

  private xs(): Float64Array {
    const steps = this.table.get('step');
    return this.xMode === 'epoch' ? stepsToEpochs(steps, this.epochEnds) : steps;
  }

  draw(): void {
    const x = this.xs();
    const [from, to] = this.zoom ? [Math.max(0, lowerBound(x, this.zoom[0]) - 1), Math.min(x.length, lowerBound(x, this.zoom[1]) + 1)] : [0, x.length];
    let drawn = 0;
    for (const spec of CHARTS) {
      const plot = this.plots.get(spec.id)!;
      if (plot.series[0].label !== this.xMode) {
        plot.series[0].label = this.xMode;
        const lbl = plot.root.querySelector('.u-legend th, .u-legend .u-label');
        if (lbl) lbl.textContent = this.xMode;
      }
      const keys = spec.series.map((s) => this.table.get(s.key));
      const idx = extremeIndices(x, keys[0], from, to, Math.max(50, Math.floor(plot.bbox.width / devicePixelRatio) || 400));
      const [gx, ...gy] = gather([x, ...keys], idx);
      let data: (number | null)[][];
      if (spec.id === 'loss') {
        const conv = (steps: number[]) => (this.xMode === 'epoch' ? Array.from(stepsToEpochs(steps, this.epochEnds)) : steps);
        const ov = ['val loss', 'test loss'].map((label) => {
          const o = this.overlays.filter((v) => v.label === label);
          return { x: conv(o.flatMap((v) => v.x)), y: o.flatMap((v) => v.y) };
        });
        data = mergePoints(gx, gy, ov);
      } else data = [gx, ...gy];
      drawn += idx.length;
      const box = this.boxes.get(spec.id)!;
      box.dataset.points = String(idx.length);
      box.dataset.lastX = idx.length ? String(gx[gx.length - 1]) : '';
      this.internal = true;
      plot.setData(aligned(data), !this.zoom);
      if (this.zoom) plot.setScale('x', { min: this.zoom[0], max: this.zoom[1] });
      this.internal = false;
    }
    this.root.dataset.points = String(this.table.length);
    this.root.dataset.lastStep = String(this.table.length ? this.table.lastStep : '');
    this.onDrawn?.(drawn);
  }

  private onScale(u: uPlot): void {
    if (this.internal) return;
    const { min, max } = u.scales.x;
    if (min === undefined || max === undefined || min === null || max === null) return;
    const x = this.xs();
    if (!x.length || (min <= x[0] && max >= x[x.length - 1])) this.setZoom(null);
    else this.setZoom([min, max]);
  }

  private setZoom(z: [number, number] | null): void {
    this.zoom = z;
    this.request();
    if (this.xMode === 'step') this.onZoom?.(z);
  }

  private currentRange(): [number, number] | null {
    if (this.zoom) return this.zoom;
    const x = this.xs();
    return x.length ? [x[0], x[x.length - 1]] : null;
  }

  private onKey(e: KeyboardEvent): void {
    const r = this.currentRange();
    if (!r) return;
    const w = r[1] - r[0] || 1;
    const moves: Record<string, [number, number] | null> = {
      ArrowLeft: [r[0] - w * 0.1, r[1] - w * 0.1],
      ArrowRight: [r[0] + w * 0.1, r[1] + w * 0.1],
      '+': [r[0] + w * 0.25, r[1] - w * 0.25],
      '=': [r[0] + w * 0.25, r[1] - w * 0.25],
      '-': [r[0] - w * 0.5, r[1] + w * 0.5],
      Escape: null,
      '0': null,
    };
    if (!(e.key in moves)) return;
    e.preventDefault();
    this.setZoom(moves[e.key]);
  }

  private onWheel(e: WheelEvent, plot: uPlot): void {
    if (!e.ctrlKey && !e.metaKey && !e.shiftKey) return;
    const r = this.currentRange();
    if (!r) return;
    e.preventDefault();
    const w = r[1] - r[0] || 1;
    if (e.shiftKey) {
      const d = (Math.sign(e.deltaY || e.deltaX) * w) / 10;
      this.setZoom([r[0] + d, r[1] + d]);
    } else {
      const at = plot.posToVal(e.offsetX, 'x');
      const f = e.deltaY < 0 ? 0.8 : 1.25;
      this.setZoom([at - (at - r[0]) * f, at + (r[1] - at) * f]);
    }
  }

  private resize(): void {
    for (const plot of this.plots.values()) {
      const w = (plot.root.parentElement?.clientWidth ?? 400) - 4;
      if (w > 100 && Math.abs(w - plot.width) > 2) plot.setSize({ width: w, height: 170 });
    }
  }

  /** A PNG (data URL) of a chart. */
  png(id: string): string {
    return this.plots.get(id)!.ctx.canvas.toDataURL('image/png');
  }

  csv(spec: ChartSpec): string {
    const names = ['step', 'epoch', ...spec.series.map((s) => s.key)];
    return toCsv(names, names.map((n) => this.table.get(n)));
  }

  saveHandler: ((name: string, data: string, encoding: 'utf8' | 'base64') => void) | undefined;

  private savePng(id: string): void {
    this.saveHandler?.(`onthefly-${id}.png`, this.png(id).split(',')[1], 'base64');
  }

  private saveCsv(spec: ChartSpec): void {
    this.saveHandler?.(`onthefly-${spec.id}.csv`, this.csv(spec), 'utf8');
  }
}

export function button(text: string, title: string, onClick: () => void): HTMLButtonElement {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.title = title;
  b.setAttribute('aria-label', title);
  b.addEventListener('click', onClick);
  return b;
}
