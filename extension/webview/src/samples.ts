/**
 * The per-sample view: the loss histogram of a pass with its quantile lines,
 * a loss range chosen by dragging (or typed) with the number of samples in
 * it, saved as a named slice and exported; quantile bands over epochs; the
 * hardest samples with a sparkline of their loss over epochs. A pass's
 * histogram and quantiles are drawn from its epoch summary (the `epoch`
 * notification, see distribution.ts); the hardest samples are pulled with
 * `report` and `query`: per-sample rows never arrive as events.
 */
import uPlot from 'uplot';
import type { EpochPayload, ReportParams, ReportResult } from '../../src/protocol/types';
import { button } from './charts';
import type { Client } from './client';
import { type EpochChoice, type LossDistribution, QUANTILES as Q, distributionLine, histogramBars, pickPass, quantileBands, summarizedEpochs } from './distribution';
import { fmt } from './format';
import { countInRange } from './series';
import { palette } from './theme';

export interface SampleContext {
  session: string;
  run: string;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

export class SamplesView {
  private ctx: SampleContext | undefined;
  private epochs: EpochPayload[] = [];
  /** The pass drawn: its histogram, quantile lines and the range estimate. */
  private shown: LossDistribution | undefined;
  private hist: uPlot;
  private histBox: HTMLElement;
  private bands: uPlot;
  private splitSel = el('select', { 'aria-label': 'Split', 'data-testid': 'split' });
  private epochSel = el('select', { 'aria-label': 'Epoch', 'data-testid': 'epoch-select' });
  private lo = el('input', { type: 'number', step: 'any', 'aria-label': 'Lowest loss of the range', 'data-testid': 'range-min' });
  private hi = el('input', { type: 'number', step: 'any', 'aria-label': 'Highest loss of the range', 'data-testid': 'range-max' });
  private countOut = el('output', { 'data-testid': 'range-count', 'aria-live': 'polite' });
  private sliceName = el('input', { type: 'text', 'aria-label': 'Slice name', placeholder: 'slice name', 'data-testid': 'slice-name' });
  private format = el('select', { 'aria-label': 'Export format', 'data-testid': 'slice-format' });
  private exportPath = el('input', { type: 'text', 'aria-label': 'Export path, inside the training process working directory', placeholder: 'slices/<name>.csv', 'data-testid': 'slice-path' });
  private sliceOut = el('output', { 'data-testid': 'slice-result', 'aria-live': 'polite' });
  private summary = el('p', { 'data-testid': 'report-summary' });
  private table = el('table', { 'data-testid': 'hardest-table' });
  private sparks: uPlot[] = [];
  private follow = true;
  private savedSlice: string | undefined;
  private generation = 0;

  constructor(root: HTMLElement, private readonly client: Client, private readonly notify: (msg: string, level?: 'info' | 'error') => void) {
    for (const s of ['train', 'val', 'test']) this.splitSel.append(el('option', { value: s }, s));
    for (const f of ['csv', 'parquet', 'json']) this.format.append(el('option', { value: f }, f.toUpperCase()));
    this.splitSel.addEventListener('change', () => this.load());
    this.epochSel.addEventListener('change', () => {
      this.follow = this.epochSel.value === 'latest';
      this.load();
    });
    const bar = el('div', { class: 'toolbar' });
    bar.append(el('label', {}, 'Split '), this.splitSel, el('label', {}, ' Epoch '), this.epochSel, this.summary);

    const p = palette();
    const histBox = (this.histBox = el('section', { class: 'chart', 'data-testid': 'sample-histogram', tabindex: '0', 'aria-label': 'Loss histogram: drag to choose a loss range' }));
    histBox.append(el('h3', {}, 'Per-sample loss'));
    const histPlot = el('div');
    histBox.append(histPlot);
    this.hist = new uPlot(
      {
        width: 560,
        height: 200,
        scales: { x: { time: false } },
        series: [{ label: 'loss' }, { label: 'samples', fill: p.series[0] + '99', stroke: p.series[0], paths: uPlot.paths.bars!({ size: [1, Infinity], align: 0 }), points: { show: false } }],
        axes: [{ stroke: p.fg, grid: { stroke: p.grid } }, { stroke: p.fg, grid: { stroke: p.grid }, size: 50 }],
        cursor: { drag: { x: true, y: false, setScale: false } },
        hooks: {
          setSelect: [(u) => this.onSelect(u)],
          draw: [(u) => this.drawQuantiles(u)],
        },
      },
      [[], []],
      histPlot,
    );
    const range = el('div', { class: 'toolbar' });
    const onRange = () => this.updateCount();
    this.lo.addEventListener('change', onRange);
    this.hi.addEventListener('change', onRange);
    const save = button('Save slice', 'Save the samples of this loss range as a named slice', () => void this.saveSlice());
    save.dataset.testid = 'slice-save';
    const exp = button('Export slice', 'Write the rows of the saved slice to a file in the training process working directory', () => void this.exportSlice());
    exp.dataset.testid = 'slice-export';
    range.append(el('label', {}, 'Loss from '), this.lo, el('label', {}, ' to '), this.hi, this.countOut);
    const sliceBar = el('div', { class: 'toolbar' });
    sliceBar.append(this.sliceName, save, this.format, this.exportPath, exp, this.sliceOut);

    const bandBox = el('section', { class: 'chart', 'data-testid': 'quantile-bands', tabindex: '0', 'aria-label': 'Loss quantiles p10, p50, p90, p99 over epochs' });
    bandBox.append(el('h3', {}, 'Loss quantiles over epochs'));
    const bandPlot = el('div');
    bandBox.append(bandPlot);
    this.bands = new uPlot(
      {
        width: 560,
        height: 200,
        scales: { x: { time: false } },
        series: [{ label: 'epoch' }, ...Q.map((q, i) => ({ label: q, stroke: p.series[[3, 0, 2, 1][i]], width: q === 'p50' ? 2 : 1 }))],
        bands: [{ series: [3, 1], fill: p.series[0] + '22' }, { series: [4, 3], fill: p.series[1] + '22' }],
        axes: [{ stroke: p.fg, grid: { stroke: p.grid } }, { stroke: p.fg, grid: { stroke: p.grid }, size: 50 }],
      },
      [[], [], [], [], []],
      bandPlot,
    );
    const tableBox = el('section', { class: 'table-box' });
    tableBox.append(el('h3', {}, 'Hardest samples'), this.table);
    const grid = el('div', { class: 'samples-grid' });
    const left = el('div');
    left.append(histBox, range, sliceBar, bandBox);
    grid.append(left, tableBox);
    root.append(bar, grid);
    this.renderEpochOptions();
  }

  /** Show another run (or session); clears what was shown. */
  setContext(ctx: SampleContext | undefined, epochs: EpochPayload[]): void {
    this.ctx = ctx;
    this.epochs = [...epochs];
    this.shown = undefined;
    this.follow = true;
    this.renderEpochOptions();
    this.renderBands();
    void this.load();
  }

  /** A pass finished: refresh the bands, and the histogram when following the latest epoch. */
  addEpoch(e: EpochPayload): void {
    this.epochs = this.epochs.filter((x) => !(x.split === e.split && x.epoch === e.epoch && x.run === e.run)).concat(e);
    this.renderEpochOptions();
    this.renderBands();
    if (this.follow && e.split === this.splitSel.value) void this.load();
  }

  private renderEpochOptions(): void {
    const eps = summarizedEpochs(this.epochs, this.splitSel.value);
    const current = this.follow ? 'latest' : this.epochSel.value;
    this.epochSel.replaceChildren(el('option', { value: 'latest' }, 'latest'), ...eps.map((e) => el('option', { value: String(e) }, String(e))));
    this.epochSel.value = eps.map(String).includes(current) ? current : 'latest';
  }

  private renderBands(): void {
    this.bands.setData(quantileBands(this.epochs, this.splitSel.value));
  }

  async load(): Promise<void> {
    const gen = ++this.generation;
    const ctx = this.ctx;
    this.renderBands();
    if (!ctx) {
      this.summary.textContent = 'No run chosen.';
      return;
    }
    const split = this.splitSel.value;
    const choice: EpochChoice = this.follow || this.epochSel.value === 'latest' ? 'latest' : Number(this.epochSel.value);
    // The pass's summary is held (from its epoch notification): draw it now, ask report for the hardest samples.
    const held = pickPass(this.epochs, ctx.run, split, choice);
    if (held) this.showDistribution(held, 'epoch');
    const params: ReportParams = { run: ctx.run, split, k: 20 };
    const epoch = held?.epoch ?? (choice === 'latest' ? undefined : choice);
    if (epoch !== undefined) params.epoch = epoch;
    try {
      const r = await this.client.call(ctx.session, 'report', params);
      if (gen !== this.generation) return;
      if (!held) this.showDistribution(r, 'report');
      this.table.dataset.epoch = String(r.epoch);
      this.renderTable(r);
      void this.loadSparklines(ctx, r, gen);
    } catch (e) {
      if (gen !== this.generation) return;
      this.table.replaceChildren();
      if (held) return; // the pass is drawn; only its hardest samples are missing
      this.shown = undefined;
      this.summary.textContent = `No per-sample report yet: ${(e as Error).message}`;
      this.hist.setData([[], []]);
      this.histBox.dataset.bins = '0';
    }
  }

  /** Draw a pass: its histogram, quantile lines and summary line. */
  private showDistribution(d: LossDistribution, source: 'epoch' | 'report'): void {
    this.shown = d;
    this.summary.textContent = distributionLine(d);
    const bars = histogramBars(d.hist);
    this.hist.setData(bars);
    this.histBox.dataset.bins = String(bars[1].length);
    this.histBox.dataset.count = String(d.count);
    this.histBox.dataset.epoch = String(d.epoch);
    this.histBox.dataset.source = source;
  }

  private drawQuantiles(u: uPlot): void {
    const r = this.shown;
    if (!r) return;
    const ctx = u.ctx;
    const p = palette();
    ctx.save();
    ctx.setLineDash([4, 3]);
    ctx.font = `${10 * devicePixelRatio}px sans-serif`;
    Q.forEach((q, i) => {
      const v = r.quantiles[q];
      if (v === null || v === undefined) return;
      const x = u.valToPos(v, 'x', true);
      ctx.strokeStyle = p.series[[3, 0, 2, 1][i]];
      ctx.fillStyle = ctx.strokeStyle;
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
      ctx.fillText(q, x + 3, u.bbox.top + 12 * devicePixelRatio * (i + 1));
    });
    ctx.restore();
  }

  private onSelect(u: uPlot): void {
    if (u.select.width <= 0) return;
    const lo = u.posToVal(u.select.left, 'x');
    const hi = u.posToVal(u.select.left + u.select.width, 'x');
    this.lo.value = lo.toPrecision(4);
    this.hi.value = hi.toPrecision(4);
    this.updateCount();
  }

  /** Set the loss range (as a drag would) and count its samples. */
  setRange(lo: number, hi: number): void {
    this.lo.value = String(lo);
    this.hi.value = String(hi);
    void this.updateCount();
  }

  private async updateCount(): Promise<void> {
    const r = this.shown;
    const lo = Number(this.lo.value);
    const hi = Number(this.hi.value);
    if (!r || !this.ctx || !Number.isFinite(lo) || !Number.isFinite(hi) || hi < lo) {
      this.countOut.textContent = '';
      return;
    }
    this.countOut.textContent = `≈ ${countInRange(r.hist.edges, r.hist.counts, lo, hi).toLocaleString()} samples`;
    try {
      const rows = await this.client.rows<{ n: number }>(
        this.ctx.session,
        'SELECT count(*) AS n FROM samples WHERE run_id = ? AND split = ? AND epoch = ? AND loss BETWEEN ? AND ?',
        [r.run, r.split, r.epoch, lo, hi],
      );
      this.countOut.textContent = `${Number(rows[0]?.n ?? 0).toLocaleString()} samples in range`;
      this.countOut.dataset.count = String(rows[0]?.n ?? 0);
    } catch {
      // the estimate stays
    }
  }

  private async saveSlice(): Promise<void> {
    const r = this.shown;
    const name = this.sliceName.value.trim() || `loss-${this.lo.value}-${this.hi.value}`;
    if (!r || !this.ctx) return this.say('Choose a pass with samples first.', 'error');
    const lo = Number(this.lo.value);
    const hi = Number(this.hi.value);
    if (!Number.isFinite(lo) || !Number.isFinite(hi)) return this.say('Drag a loss range on the histogram, or type one, first.', 'error');
    try {
      const s = await this.client.call(this.ctx.session, 'slice', { name, run: r.run, split: r.split, epoch: r.epoch, loss_min: lo, loss_max: hi, replace: true });
      this.savedSlice = s.name;
      this.sliceName.value = s.name;
      this.say(`Slice '${s.name}' saved: ${s.count} samples.`);
    } catch (e) {
      this.say(`Saving the slice failed: ${(e as Error).message}`, 'error');
    }
  }

  private async exportSlice(): Promise<void> {
    const name = this.savedSlice ?? this.sliceName.value.trim();
    if (!name || !this.ctx) return this.say('Save a slice first.', 'error');
    const format = this.format.value as 'csv' | 'parquet' | 'json';
    const path = this.exportPath.value.trim() || `slices/${name}.${format}`;
    try {
      const r = await this.client.call(this.ctx.session, 'export_slice', { name, path, format });
      this.sliceOut.dataset.path = r.path;
      this.say(`Exported ${r.rows} rows to ${r.path}`);
    } catch (e) {
      this.say(`Export failed: ${(e as Error).message}`, 'error');
    }
  }

  private say(msg: string, level: 'info' | 'error' = 'info'): void {
    this.sliceOut.textContent = msg;
    this.sliceOut.className = level;
    this.notify(msg, level);
  }

  private renderTable(r: ReportResult): void {
    for (const s of this.sparks) s.destroy();
    this.sparks = [];
    const head = el('tr');
    for (const h of ['sample', 'loss', 'label', 'pred', 'loss over epochs']) head.append(el('th', { scope: 'col' }, h));
    const body = el('tbody');
    for (const s of r.hardest) {
      const tr = el('tr', { 'data-sample': String(s.sample_id) });
      tr.append(el('td', {}, String(s.sample_id)), el('td', {}, fmt(s.loss)), el('td', {}, s.label == null ? '—' : String(s.label)), el('td', {}, s.pred == null ? '—' : String(s.pred)));
      const spark = el('td', { class: 'spark' });
      tr.append(spark);
      body.append(tr);
    }
    this.table.replaceChildren(el('thead'), body);
    this.table.tHead!.append(head);
  }

  private async loadSparklines(ctx: SampleContext, r: ReportResult, gen: number): Promise<void> {
    if (!r.hardest.length) return;
    const ids = r.hardest.map((s) => s.sample_id);
    let rows: { sample_id: number; epoch: number; loss: number }[];
    try {
      rows = await this.client.rows(
        ctx.session,
        'SELECT sample_id, epoch, avg(loss) AS loss FROM samples WHERE run_id = ? AND split = ? AND list_contains(?, sample_id) GROUP BY sample_id, epoch ORDER BY sample_id, epoch',
        [r.run, r.split, ids],
        20_000,
      );
    } catch {
      return;
    }
    if (gen !== this.generation) return;
    const p = palette();
    for (const tr of this.table.querySelectorAll<HTMLTableRowElement>('tbody tr')) {
      const id = Number(tr.dataset.sample);
      const mine = rows.filter((x) => x.sample_id === id);
      const cell = tr.querySelector('td.spark') as HTMLElement;
      cell.setAttribute('aria-label', `loss by epoch: ${mine.map((m) => `${m.epoch}: ${fmt(m.loss)}`).join(', ')}`);
      this.sparks.push(
        new uPlot(
          {
            width: 120,
            height: 28,
            legend: { show: false },
            cursor: { show: false },
            scales: { x: { time: false } },
            axes: [{ show: false }, { show: false }],
            series: [{}, { stroke: p.series[1], width: 1.5, points: { show: mine.length < 2 } }],
          },
          [mine.map((m) => m.epoch), mine.map((m) => m.loss)],
          cell,
        ),
      );
    }
  }
}
