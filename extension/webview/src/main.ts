/**
 * The dashboard app: wires the host channel, the session bar, the live
 * charts, the per-sample view, runs and logs. On every (re)connection of a
 * session it re-reads history from the store with `query`; live events only
 * append to it.
 */
import 'uplot/dist/uPlot.min.css';
import './styles.css';
import type { ToView } from '../../src/bridge/messages';
import type { SessionSummary } from '../../src/bridge/session';
import type { EpochPayload, RunPayload, StatePayload, TestPayload } from '../../src/protocol/types';
import { StepCharts } from './charts';
import { Client } from './client';
import type { Control } from './controls';
import { connectHost } from './host';
import { LogsView } from './logs';
import { RunsView } from './runs';
import { SamplesView } from './samples';
import { fmt } from './format';
import { SessionBar } from './sessionBar';
import { historySql } from './history';

interface ViewState {
  session?: string;
  run?: string;
  tab?: string;
  xMode?: 'step' | 'epoch';
}

const host = connectHost();
const client = new Client(host);
const saved = host.getState<ViewState>() ?? {};
const $ = (id: string) => document.getElementById(id) as HTMLElement;

document.body.dataset.mode = host.mode;
const notice = $('notice');
function say(message: string, level: 'info' | 'error' = 'info'): void {
  notice.textContent = message;
  notice.className = level;
}

const bar = new SessionBar($('session-bar'), (id) => pickSession(id), (c) => void control(c));
const charts = new StepCharts($('charts'));
charts.saveHandler = (name, data, encoding) => void save(name, data, encoding);
charts.onZoom = (range) => void zoomDetail(range);
const samples = new SamplesView($('samples'), client, say);
const runs = new RunsView($('runs'), (id) => chooseRun(id, true));
const logs = new LogsView($('logs'));

// -- tabs ---------------------------------------------------------------------
const tabs = [...document.querySelectorAll<HTMLButtonElement>('[role=tab]')];
function showTab(name: string): void {
  for (const t of tabs) {
    const on = t.dataset.tab === name;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    $(`panel-${t.dataset.tab}`).hidden = !on;
  }
  persist({ tab: name });
  if (name === 'charts') charts.request();
}
tabs.forEach((t, i) => {
  t.addEventListener('click', () => showTab(t.dataset.tab!));
  t.addEventListener('keydown', (e) => {
    const d = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
    if (!d) return;
    const next = tabs[(i + d + tabs.length) % tabs.length];
    next.focus();
    showTab(next.dataset.tab!);
  });
});
showTab(saved.tab ?? 'charts');

const xToggle = $('x-mode') as HTMLSelectElement;
xToggle.value = saved.xMode ?? 'step';
charts.setXMode(xToggle.value as 'step' | 'epoch');
xToggle.addEventListener('change', () => {
  charts.setXMode(xToggle.value as 'step' | 'epoch');
  persist({ xMode: xToggle.value as 'step' | 'epoch' });
});

function persist(p: Partial<ViewState>): void {
  Object.assign(saved, p);
  host.setState(saved);
}

// -- sessions and runs --------------------------------------------------------
let sessions: SessionSummary[] = [];
const connectedOnce = new Map<string, boolean>();
/** The run shown; `following` means: switch along when the trainer starts another run. */
let run: string | undefined = saved.run;
let following = !saved.run;
let loading = 0;
let liveBuffer: Record<string, unknown[]>[] = [];
let epochs: EpochPayload[] = [];
let tests: TestPayload[] = [];

function onSessions(list: SessionSummary[]): void {
  sessions = list;
  bar.setSessions(list);
  if (!bar.current || !list.some((s) => s.id === bar.current)) {
    const pick = list.find((s) => s.id === saved.session) ?? list.find((s) => s.connected) ?? list[0];
    if (pick) return pickSession(pick.id);
  }
  const s = bar.session;
  if (!s) return;
  // The shown session went away and another is live: follow the live one.
  const live = list.find((x) => x.connected);
  if (!s.connected && live) return pickSession(live.id);
  const was = connectedOnce.get(s.id) ?? false;
  connectedOnce.set(s.id, s.connected);
  if (s.connected && !was) void loadSession(s);
  else if (following && s.run && s.run !== run && s.connected) chooseRun(s.run, false);
}

function pickSession(id: string): void {
  bar.current = id;
  persist({ session: id });
  bar.render();
  const s = bar.session;
  connectedOnce.set(id, !!s?.connected);
  if (s?.connected) void loadSession(s);
}

async function loadSession(s: SessionSummary): Promise<void> {
  runs.clear();
  logs.clear();
  tests = [];
  const id = s.id;
  // The run to show is known from the session already: read its steps while the rest loads.
  const early = (!following && run) || s.run || undefined;
  if (early) chooseRun(early, false);
  try {
    const [runRows, edgeRows, logRows, testRows] = await Promise.all([
      client.rows<Record<string, unknown>>(id, historySql.runs),
      client.rows<Record<string, unknown>>(id, historySql.edges),
      client.rows<Record<string, unknown>>(id, historySql.logs),
      client.rows<Record<string, unknown>>(id, historySql.tests),
    ]);
    if (bar.current !== id) return;
    const parents = new Map<string, RunPayload['parents']>();
    for (const e of edgeRows) {
      const child = String(e.child_id);
      parents.set(child, [...(parents.get(child) ?? []), { id: String(e.parent_id), role: e.role == null ? undefined : String(e.role) }]);
    }
    for (const r of runRows) {
      runs.upsert({ id: String(r.id), name: String(r.name ?? r.id), kind: String(r.kind ?? 'base'), status: String(r.status ?? ''), parents: parents.get(String(r.id)) ?? [], created_at: Number(r.created_at) });
    }
    for (const l of logRows.reverse()) logs.add({ level: asLevel(l.level), message: String(l.message), step: l.step as number | null, time: Number(l.created_at) || Date.now() / 1000 });
    tests = testRows.map((t) => ({ run: String(t.run), split: String(t.split), step: Number(t.step), epoch: Number(t.epoch), loss: t.loss as number | null, metrics: parseJson(t.metrics) as Record<string, unknown>, count: Number(t.count ?? 0) }));
    runs.setTests(tests);
    refreshOverlays();
  } catch (e) {
    say(`Reading the session's history failed: ${(e as Error).message}`, 'error');
  }
  if (early && runs.all.some((r) => r.id === early)) runs.select(early);
  else {
    const last = runs.all.at(-1)?.id;
    if (last && last !== early) chooseRun(last, false);
  }
}

function chooseRun(id: string, byUser: boolean): void {
  if (byUser) following = id === bar.session?.run;
  run = id;
  persist({ run: following ? undefined : id });
  runs.select(id);
  void loadRun(id);
}

async function loadRun(id: string): Promise<void> {
  const s = bar.session;
  if (!s) return;
  const gen = ++loading;
  liveBuffer = [];
  charts.reset();
  epochs = [];
  try {
    const epochsRead = client.rows<Record<string, unknown>>(s.id, historySql.epochs, [id]);
    epochsRead.catch(() => {});
    let cols = await client.columns(s.id, historySql.stepsBucketed, [id, historySql.buckets, id, id], historySql.buckets * 4 + 8);
    const n = Number(cols.n?.[0] ?? 0);
    bucketedSteps = n > historySql.fullLimit ? n : 0;
    if (n > (cols.step?.length ?? 0) && n <= historySql.fullLimit) cols = await client.columns(s.id, historySql.steps, [id], n);
    const epochRows = await epochsRead;
    if (gen !== loading) return;
    charts.table.append(cols);
    $('charts').dataset.historySteps = String(n);
    epochs = epochRows.map(toEpoch);
  } catch (e) {
    if (gen !== loading) return;
    say(`Reading run ${id} failed: ${(e as Error).message}`, 'error');
  }
  for (const b of liveBuffer) charts.table.append(b);
  liveBuffer = [];
  loading = gen === loading ? 0 : loading;
  refreshOverlays();
  samples.setContext({ session: s.id, run: id }, epochs);
  charts.request();
}

/** Steps in the store for the shown run, when it had more than the dashboard read whole. */
let bucketedSteps = 0;
let detailTimer = 0;

/** Read full-resolution steps of a zoomed range of a long run (debounced). */
async function zoomDetail(range: [number, number] | null): Promise<void> {
  clearTimeout(detailTimer);
  const s = bar.session;
  if (!range || !bucketedSteps || !s || !run) return;
  const id = run;
  detailTimer = window.setTimeout(async () => {
    const lo = Math.floor(range[0]);
    const hi = Math.ceil(range[1]);
    try {
      const [c] = await client.rows<{ n: number }>(s.id, historySql.stepRangeCount, [id, lo, hi]);
      if (Number(c?.n ?? 0) > historySql.fullLimit || run !== id) return;
      const cols = await client.columns(s.id, historySql.stepRange, [id, lo, hi], historySql.fullLimit);
      if (run !== id) return;
      charts.table = charts.table.withDetail(lo, hi, cols);
      charts.request();
    } catch (e) {
      say(`Reading steps ${lo}–${hi} failed: ${(e as Error).message}`, 'error');
    }
  }, 150);
}

function toEpoch(r: Record<string, unknown>): EpochPayload {
  const edges = parseJson(r.hist_edges) as number[] | null;
  const counts = parseJson(r.hist_counts) as number[] | null;
  return {
    run: String(r.run),
    split: String(r.split),
    epoch: Number(r.epoch),
    step: Number(r.step),
    count: Number(r.count),
    mean: r.mean as number | null,
    quantiles: { p10: r.p10 as number, p50: r.p50 as number, p90: r.p90 as number, p99: r.p99 as number },
    hist: { edges: edges ?? [], counts: counts ?? [] },
  };
}

function refreshOverlays(): void {
  const val = epochs.filter((e) => e.split === 'val' && e.mean !== null);
  const test = tests.filter((t) => t.run === run && t.loss !== null);
  charts.overlays = [
    { label: 'val loss', x: val.map((e) => e.step), y: val.map((e) => e.mean) },
    { label: 'test loss', x: test.map((t) => t.step), y: test.map((t) => t.loss) },
  ];
  charts.epochEnds = epochs.filter((e) => e.split === 'train').map((e) => e.step).sort((a, b) => a - b);
  charts.request();
}

// -- live events --------------------------------------------------------------
function onNotification(session: string, method: string, params: Record<string, unknown>): void {
  if (session !== bar.current) return;
  const s = bar.session;
  switch (method) {
    case 'steps': {
      const cols = params as Record<string, unknown[]>;
      const n = cols.step?.length ?? 0;
      if (n) bar.setLive(session, Number(cols.step[n - 1]), lastNumber(cols.epoch), lastNumber(cols.samples_per_s));
      if (!run || (s?.run && s.run !== run)) return;
      if (loading) liveBuffer.push(params as Record<string, unknown[]>);
      else if (charts.table.append(params as Record<string, unknown[]>)) charts.request();
      return;
    }
    case 'state': {
      const st = params as unknown as StatePayload;
      if (following && st.run && st.run !== run) chooseRun(st.run, false);
      return;
    }
    case 'run':
      runs.upsert(params as unknown as RunPayload);
      return;
    case 'epoch': {
      const e = params as unknown as EpochPayload;
      if (e.run !== run) return;
      epochs = epochs.filter((x) => !(x.split === e.split && x.epoch === e.epoch)).concat(e);
      refreshOverlays();
      samples.addEpoch(e);
      return;
    }
    case 'test': {
      const t = params as unknown as TestPayload;
      tests.push(t);
      runs.addTest(t);
      refreshOverlays();
      showTest(t);
      return;
    }
    case 'checkpoint':
      logs.add({ level: 'info', message: `checkpoint ${String(params.id)} saved at step ${String(params.step)} (${String(params.path)})`, step: params.step as number, time: Date.now() / 1000 });
      return;
    case 'log':
      logs.add({ level: asLevel(params.level), message: String(params.message), step: params.step as number | null, time: Date.now() / 1000 });
      return;
    case 'error':
      logs.add({ level: 'error', message: `${params.type ? `${String(params.type)}: ` : ''}${String(params.message)}${params.fatal ? ' (training stopped)' : ''}`, time: Date.now() / 1000 });
      say(String(params.message), 'error');
      return;
  }
}

function showTest(t: { split: string; loss: number | null; count: number; metrics: Record<string, unknown> }): void {
  const out = $('test-result');
  const metrics = Object.entries(t.metrics ?? {}).map(([k, v]) => `${k} ${typeof v === 'number' ? fmt(v) : String(v)}`).join(', ');
  out.textContent = `${t.split} loss ${fmt(t.loss)} on ${t.count} samples${metrics ? ` (${metrics})` : ''}`;
  out.dataset.loss = String(t.loss);
}

// -- controls -----------------------------------------------------------------
async function control(c: Control): Promise<void> {
  const s = bar.session;
  if (c === 'load-session') return loadSessionFile();
  if (!s) return;
  if (c === 'export-session') return exportSessionFile(s.id);
  bar.busy.add(c);
  bar.render();
  try {
    if (c === 'test') {
      say('Testing… training waits meanwhile.');
      const r = await client.call(s.id, 'test', {});
      showTest(r);
      say(`Test finished: loss ${fmt(r.loss)} on ${r.count} samples.`);
    } else if (c === 'checkpoint') {
      const r = await client.call(s.id, 'checkpoint', {});
      say(`Checkpoint ${r.id} saved at step ${r.step}: ${r.path}`);
    } else {
      const r = await client.call(s.id, c, {});
      say(`${c[0].toUpperCase()}${c.slice(1)}: the run is ${r.state}.`);
    }
  } catch (e) {
    say(`${c} failed: ${(e as Error).message}`, 'error');
  } finally {
    bar.busy.delete(c);
    bar.render();
  }
}

async function exportSessionFile(session: string): Promise<void> {
  let path: string | undefined;
  if (host.mode === 'browser') {
    path = window.prompt('Export the session to this .zip file (a path on the machine running the dashboard):', `onthefly-${session}.zip`) ?? undefined;
    if (!path) return;
  }
  say('Exporting the session…');
  try {
    const r = await client.exportSession(session, path);
    say(r.message);
  } catch (e) {
    say((e as Error).message, 'error');
  }
}

async function loadSessionFile(): Promise<void> {
  let path: string | undefined;
  if (host.mode === 'browser') {
    path = window.prompt('Load an exported session (.zip path on the machine running the dashboard):') ?? undefined;
    if (!path) return;
  }
  try {
    const r = await client.loadSession(path);
    say(r.message);
  } catch (e) {
    say((e as Error).message, 'error');
  }
}

async function save(name: string, data: string, encoding: 'utf8' | 'base64'): Promise<void> {
  if (host.mode === 'browser') {
    const a = document.createElement('a');
    a.href = encoding === 'base64' ? `data:application/octet-stream;base64,${data}` : URL.createObjectURL(new Blob([data], { type: 'text/csv' }));
    a.download = name;
    a.click();
    return;
  }
  try {
    const r = await client.saveFile(name, data, encoding);
    say(r.message);
  } catch (e) {
    say((e as Error).message, 'error');
  }
}

function lastNumber(col: unknown[] | undefined): number | undefined {
  for (let i = (col?.length ?? 0) - 1; i >= 0; i--) if (typeof col![i] === 'number') return col![i] as number;
  return undefined;
}

function asLevel(v: unknown): 'debug' | 'info' | 'warning' | 'error' {
  return v === 'debug' || v === 'warning' || v === 'error' ? v : 'info';
}

function parseJson(v: unknown): unknown {
  if (typeof v !== 'string') return v;
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

// -- host messages ------------------------------------------------------------
host.onMessage((m: ToView) => {
  if (client.handle(m)) return;
  switch (m.type) {
    case 'host':
      document.body.dataset.version = m.version;
      return;
    case 'link':
      bar.setLink(m);
      return;
    case 'sessions':
      onSessions(m.sessions);
      return;
    case 'notification':
      onNotification(m.session, m.method, m.params);
      return;
  }
});
host.post({ type: 'ready' });
