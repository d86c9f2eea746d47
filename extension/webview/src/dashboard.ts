/**
 * The dashboard's controller: it holds the views and the state of what is
 * shown, and does what the pure modules decide: which session
 * (sessionChoice.ts), which run and what arrives for it (shownRun.ts), what a
 * notification does (notifications.ts), the rows read back from the store
 * (records.ts). On every (re)connection of a session it re-reads history
 * from the store with `query`; live events only append to it.
 */
import type { ToView } from '../../src/bridge/messages';
import type { SessionSummary } from '../../src/bridge/session';
import type { EpochPayload, RunPayload, StepsPayload, TestPayload, TrainerNotification } from '../../src/protocol/types';
import type { StepCharts } from './charts';
import type { Client } from './client';
import type { Control } from './controls';
import { fmt } from './format';
import { historySql } from './history';
import type { HostChannel } from './host';
import type { LogsView } from './logs';
import { type NotificationSink, applyNotification, testLine } from './notifications';
import type { ViewPrefs } from './prefs';
import { type LogLine, type Row, epochFromRow, logFromRow, parentsByChild, runFromRow, testFromRow } from './records';
import type { RunsView } from './runs';
import type { SamplesView } from './samples';
import { SessionChoice } from './sessionChoice';
import type { SessionBar } from './sessionBar';
import { ShownRun } from './shownRun';

/** The views of the page, and the page elements the controller writes to. */
export interface DashboardViews {
  bar: SessionBar;
  charts: StepCharts;
  samples: SamplesView;
  runs: RunsView;
  logs: LogsView;
  /** The one-line notice at the top. */
  notice: HTMLElement;
  /** Where the result of the latest test is shown. */
  testResult: HTMLElement;
  /** The charts' panel, which tells the tests how many steps the history held. */
  chartsPanel: HTMLElement;
}

const now = () => Date.now() / 1000;

export class Dashboard implements NotificationSink {
  private readonly shown: ShownRun;
  private readonly sessions = new SessionChoice();
  private detailTimer = 0;

  constructor(
    private readonly host: HostChannel,
    private readonly client: Client,
    private readonly prefs: ViewPrefs,
    private readonly views: DashboardViews,
  ) {
    this.shown = new ShownRun(prefs.saved.run);
  }

  /** A message of the host: answers go to the client, the rest is the link's. */
  onHostMessage(m: ToView): void {
    if (this.client.handle(m)) return;
    switch (m.type) {
      case 'host':
        document.body.dataset.version = m.version;
        return;
      case 'link':
        this.views.bar.setLink(m);
        return;
      case 'sessions':
        this.onSessions(m.sessions);
        return;
      case 'notification':
        this.onNotification(m.session, m);
        return;
    }
  }

  say(message: string, level: 'info' | 'error' = 'info'): void {
    this.views.notice.textContent = message;
    this.views.notice.className = level;
  }

  // -- sessions and runs --------------------------------------------------------
  private onSessions(list: SessionSummary[]): void {
    const { bar } = this.views;
    bar.setSessions(list);
    const step = this.sessions.onList(list, bar.current, this.prefs.saved.session, (run) => this.shown.shouldFollow(run));
    if (step.kind === 'pick') this.pickSession(step.id);
    else if (step.kind === 'load') void this.loadSession(step.session);
    else if (step.kind === 'follow') this.chooseRun(step.run, false);
  }

  pickSession(id: string): void {
    const { bar } = this.views;
    bar.current = id;
    this.prefs.set({ session: id });
    bar.render();
    const s = bar.session;
    if (this.sessions.picked(id, s) && s) void this.loadSession(s);
  }

  private async loadSession(s: SessionSummary): Promise<void> {
    const { bar, runs, logs } = this.views;
    const shown = this.shown;
    runs.clear();
    logs.clear();
    shown.clearSession();
    const id = s.id;
    // The run to show is known from the session already: read its steps while the rest loads.
    const early = shown.pinned || s.run || undefined;
    if (early) this.chooseRun(early, false);
    try {
      const [runRows, edgeRows, logRows, testRows] = await Promise.all([
        this.client.rows<Row>(id, historySql.runs),
        this.client.rows<Row>(id, historySql.edges),
        this.client.rows<Row>(id, historySql.logs),
        this.client.rows<Row>(id, historySql.tests),
      ]);
      if (bar.current !== id) return;
      const parents = parentsByChild(edgeRows);
      for (const r of runRows) runs.upsert(runFromRow(r, parents));
      for (const l of logRows.reverse()) logs.add(logFromRow(l, now()));
      shown.tests = testRows.map(testFromRow);
      runs.setTests(shown.tests);
      this.refreshOverlays();
    } catch (e) {
      this.say(`Reading the session's history failed: ${(e as Error).message}`, 'error');
    }
    if (early && runs.all.some((r) => r.id === early)) runs.select(early);
    else {
      const last = runs.all.at(-1)?.id;
      if (last && last !== early) this.chooseRun(last, false);
    }
  }

  chooseRun(id: string, byUser: boolean): void {
    this.shown.choose(id, byUser, this.views.bar.session?.run ?? undefined);
    this.prefs.set({ run: this.shown.pinned });
    this.views.runs.select(id);
    void this.loadRun(id);
  }

  private async loadRun(id: string): Promise<void> {
    const { bar, charts, samples } = this.views;
    const s = bar.session;
    if (!s) return;
    const shown = this.shown;
    const gen = shown.startRead();
    charts.reset();
    try {
      const epochsRead = this.client.rows<Row>(s.id, historySql.epochs, [id]);
      epochsRead.catch(() => {});
      let cols = await this.client.columns(s.id, historySql.stepsBucketed, [id, historySql.buckets, id, id], historySql.buckets * 4 + 8);
      const n = Number(cols.n?.[0] ?? 0);
      if (!shown.superseded(gen)) shown.bucketedSteps = n > historySql.fullLimit ? n : 0;
      if (n > (cols.step?.length ?? 0) && n <= historySql.fullLimit) cols = await this.client.columns(s.id, historySql.steps, [id], n);
      const epochRows = await epochsRead;
      if (shown.superseded(gen)) return;
      charts.table.append(cols);
      this.views.chartsPanel.dataset.historySteps = String(n);
      shown.epochs = epochRows.map(epochFromRow);
    } catch (e) {
      if (shown.superseded(gen)) return;
      this.say(`Reading run ${id} failed: ${(e as Error).message}`, 'error');
    }
    for (const b of shown.finishRead(gen)) charts.table.append(b);
    this.refreshOverlays();
    samples.setContext({ session: s.id, run: id }, shown.epochs);
    charts.request();
  }

  /** Read full-resolution steps of a zoomed range of a long run (debounced). */
  zoomDetail(range: [number, number] | null): void {
    clearTimeout(this.detailTimer);
    const s = this.views.bar.session;
    const id = this.shown.run;
    if (!range || !this.shown.bucketedSteps || !s || !id) return;
    this.detailTimer = window.setTimeout(() => void this.readDetail(s.id, id, Math.floor(range[0]), Math.ceil(range[1])), 150);
  }

  private async readDetail(session: string, id: string, lo: number, hi: number): Promise<void> {
    const { charts } = this.views;
    try {
      const [c] = await this.client.rows<{ n: number }>(session, historySql.stepRangeCount, [id, lo, hi]);
      if (Number(c?.n ?? 0) > historySql.fullLimit || this.shown.run !== id) return;
      const cols = await this.client.columns(session, historySql.stepRange, [id, lo, hi], historySql.fullLimit);
      if (this.shown.run !== id) return;
      charts.table = charts.table.withDetail(lo, hi, cols);
      charts.request();
    } catch (e) {
      this.say(`Reading steps ${lo}–${hi} failed: ${(e as Error).message}`, 'error');
    }
  }

  private refreshOverlays(): void {
    const { charts } = this.views;
    charts.overlays = this.shown.overlays();
    charts.epochEnds = this.shown.epochEnds();
    charts.request();
  }

  // -- live events: the NotificationSink ---------------------------------------------
  private onNotification(session: string, n: TrainerNotification): void {
    if (session !== this.views.bar.current) return;
    applyNotification(n, this.shown, this.views.bar.session?.run ?? undefined, this, now());
  }

  live(step: number, epoch: number | undefined, samplesPerS: number | undefined): void {
    const { bar } = this.views;
    if (bar.current) bar.setLive(bar.current, step, epoch, samplesPerS);
  }

  appendSteps(steps: StepsPayload): void {
    if (this.views.charts.table.append(steps)) this.views.charts.request();
  }

  followRun(run: string): void {
    this.chooseRun(run, false);
  }

  upsertRun(run: RunPayload): void {
    this.views.runs.upsert(run);
  }

  epochAdded(e: EpochPayload): void {
    this.refreshOverlays();
    this.views.samples.addEpoch(e);
  }

  testAdded(t: TestPayload): void {
    this.views.runs.addTest(t);
    this.refreshOverlays();
    this.showTest(t);
  }

  log(line: LogLine): void {
    this.views.logs.add(line);
  }

  private showTest(t: Pick<TestPayload, 'split' | 'loss' | 'count' | 'metrics'>): void {
    this.views.testResult.textContent = testLine(t);
    this.views.testResult.dataset.loss = String(t.loss);
  }

  // -- controls -----------------------------------------------------------------
  async control(c: Control): Promise<void> {
    const { bar } = this.views;
    const s = bar.session;
    if (c === 'load-session') return this.loadSessionFile();
    if (!s) return;
    if (c === 'export-session') return this.exportSessionFile(s.id);
    bar.busy.add(c);
    bar.render();
    try {
      if (c === 'test') {
        this.say('Testing… training waits meanwhile.');
        const r = await this.client.call(s.id, 'test', {});
        this.showTest(r);
        this.say(`Test finished: loss ${fmt(r.loss)} on ${r.count} samples.`);
      } else if (c === 'checkpoint') {
        const r = await this.client.call(s.id, 'checkpoint', {});
        this.say(`Checkpoint ${r.id} saved at step ${r.step}: ${r.path}`);
      } else {
        const r = await this.client.call(s.id, c, {});
        this.say(`${c[0].toUpperCase()}${c.slice(1)}: the run is ${r.state}.`);
      }
    } catch (e) {
      this.say(`${c} failed: ${(e as Error).message}`, 'error');
    } finally {
      bar.busy.delete(c);
      bar.render();
    }
  }

  private async exportSessionFile(session: string): Promise<void> {
    let path: string | undefined;
    if (this.host.mode === 'browser') {
      path = window.prompt('Export the session to this .zip file (a path on the machine running the dashboard):', `onthefly-${session}.zip`) ?? undefined;
      if (!path) return;
    }
    this.say('Exporting the session…');
    try {
      const r = await this.client.exportSession(session, path);
      this.say(r.message);
    } catch (e) {
      this.say((e as Error).message, 'error');
    }
  }

  private async loadSessionFile(): Promise<void> {
    let path: string | undefined;
    if (this.host.mode === 'browser') {
      path = window.prompt('Load an exported session (.zip path on the machine running the dashboard):') ?? undefined;
      if (!path) return;
    }
    try {
      const r = await this.client.loadSession(path);
      this.say(r.message);
    } catch (e) {
      this.say((e as Error).message, 'error');
    }
  }

  /** Save a chart's image or data: a download in the browser, a file dialog in VS Code. */
  async save(name: string, data: string, encoding: 'utf8' | 'base64'): Promise<void> {
    if (this.host.mode === 'browser') {
      const a = document.createElement('a');
      a.href = encoding === 'base64' ? `data:application/octet-stream;base64,${data}` : URL.createObjectURL(new Blob([data], { type: 'text/csv' }));
      a.download = name;
      a.click();
      return;
    }
    try {
      const r = await this.client.saveFile(name, data, encoding);
      this.say(r.message);
    } catch (e) {
      this.say((e as Error).message, 'error');
    }
  }
}
