/**
 * The dashboard app's entry: builds the views of the page and the
 * {@link Dashboard} that drives them, wires the tabs and the x axis, and
 * hands it the host's messages. Everything lives inside {@link start}: the
 * module holds no state.
 */
import 'uplot/dist/uPlot.min.css';
import './styles.css';
import { StepCharts } from './charts';
import { Client } from './client';
import { Dashboard } from './dashboard';
import { connectHost } from './host';
import { LogsView } from './logs';
import { ViewPrefs, asXMode } from './prefs';
import { RunsView } from './runs';
import { SamplesView } from './samples';
import { SessionBar } from './sessionBar';
import { wireTabs } from './tabs';

function byId(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
}

function start(): void {
  const host = connectHost();
  const client = new Client(host);
  const prefs = new ViewPrefs(host);
  document.body.dataset.mode = host.mode;

  const bar = new SessionBar(byId('session-bar'), (id) => dashboard.pickSession(id), (c) => void dashboard.control(c));
  const charts = new StepCharts(byId('charts'));
  charts.saveHandler = (name, data, encoding) => void dashboard.save(name, data, encoding);
  charts.onZoom = (range) => dashboard.zoomDetail(range);
  const samples = new SamplesView(byId('samples'), client, (message, level) => dashboard.say(message, level));
  const runs = new RunsView(byId('runs'), (id) => dashboard.chooseRun(id, true));
  const logs = new LogsView(byId('logs'));
  const dashboard = new Dashboard(host, client, prefs, {
    bar, charts, samples, runs, logs, notice: byId('notice'), testResult: byId('test-result'), chartsPanel: byId('charts'),
  });

  wireTabs([...document.querySelectorAll<HTMLButtonElement>('[role=tab]')], byId, prefs, (name) => {
    if (name === 'charts') charts.request();
  });

  const xToggle = byId('x-mode');
  if (!(xToggle instanceof HTMLSelectElement)) throw new Error('#x-mode is not a select');
  xToggle.value = asXMode(prefs.saved.xMode);
  charts.setXMode(asXMode(xToggle.value));
  xToggle.addEventListener('change', () => {
    const mode = asXMode(xToggle.value);
    charts.setXMode(mode);
    prefs.set({ xMode: mode });
  });

  host.onMessage((m) => dashboard.onHostMessage(m));
  host.post({ type: 'ready' });
}

start();
