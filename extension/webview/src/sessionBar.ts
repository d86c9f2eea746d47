/**
 * The session bar: link status, the session picker, project/session/run,
 * state, step, epoch, samples/s, and the controls, each disabled with a
 * tooltip saying why when it does not apply.
 */
import type { SessionSummary } from '../../src/bridge/session';
import { type Control, controlStates } from './controls';

export interface LinkInfo {
  listening: boolean;
  port: number;
  error?: string;
}

function span(testid: string, label: string): HTMLElement {
  const s = document.createElement('span');
  s.dataset.testid = testid;
  s.className = `field ${testid}`;
  s.title = label;
  return s;
}

export class SessionBar {
  readonly status = span('status', 'Link to training processes');
  readonly state = span('state', 'State of the run');
  readonly step = span('step', 'Optimizer steps taken');
  readonly epoch = span('epoch', 'Current epoch');
  readonly speed = span('speed', 'Samples per second');
  readonly who = span('who', 'Project · session · run');
  readonly picker = document.createElement('select');
  readonly buttons = new Map<Control, HTMLButtonElement>();
  readonly busy = new Set<Control>();
  private sessions: SessionSummary[] = [];
  private link: LinkInfo = { listening: false, port: 0 };
  current: string | undefined;
  /** The latest step metrics of the current session, newer than its last state. */
  private live: { session: string; step: number; epoch?: number; samplesPerS?: number } | undefined;

  constructor(root: HTMLElement, onPick: (id: string) => void, onControl: (c: Control) => void) {
    this.picker.dataset.testid = 'session-select';
    this.picker.setAttribute('aria-label', 'Session');
    this.picker.addEventListener('change', () => onPick(this.picker.value));
    const info = document.createElement('div');
    info.className = 'info';
    info.append(this.status, this.picker, this.who, this.state, this.step, this.epoch, this.speed);
    const controls = document.createElement('div');
    controls.className = 'controls';
    controls.setAttribute('role', 'toolbar');
    controls.setAttribute('aria-label', 'Run controls');
    const labels: Record<Control, string> = {
      pause: 'Pause',
      resume: 'Resume',
      stop: 'Stop',
      test: 'Test now',
      checkpoint: 'Checkpoint',
      'export-session': 'Export…',
      'load-session': 'Load…',
    };
    for (const c of Object.keys(labels) as Control[]) {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = labels[c];
      b.dataset.testid = c;
      b.addEventListener('click', () => onControl(c));
      this.buttons.set(c, b);
      controls.append(b);
    }
    root.append(info, controls);
    this.render();
  }

  setLink(link: LinkInfo): void {
    this.link = link;
    this.render();
  }

  setSessions(sessions: SessionSummary[]): void {
    this.sessions = sessions;
    this.render();
  }

  /** Step, epoch and throughput from the latest `steps` message. */
  setLive(session: string, step: number, epoch?: number, samplesPerS?: number): void {
    const prev = this.live?.session === session ? this.live : undefined;
    this.live = { session, step, epoch: epoch ?? prev?.epoch, samplesPerS: samplesPerS ?? prev?.samplesPerS };
    this.renderNumbers(this.session);
  }

  get session(): SessionSummary | undefined {
    return this.sessions.find((s) => s.id === this.current);
  }

  render(): void {
    const s = this.session;
    const opts = this.sessions.map((x) => {
      const o = document.createElement('option');
      o.value = x.id;
      o.textContent = `${x.project || '?'} · ${x.id}${x.connected ? '' : ' (disconnected)'}${x.readOnly ? ' (loaded)' : ''}`;
      return o;
    });
    this.picker.replaceChildren(...opts);
    this.picker.hidden = this.sessions.length < 2;
    if (s) this.picker.value = s.id;
    let status: string;
    let cls: string;
    if (!this.link.listening) {
      status = this.link.error ? `not listening: ${this.link.error}` : 'starting…';
      cls = 'bad';
    } else if (!s) {
      status = `waiting for a training process on port ${this.link.port}`;
      cls = 'waiting';
    } else if (!s.connected) {
      status = 'disconnected';
      cls = 'bad';
    } else {
      status = s.readOnly ? 'loaded (read-only)' : 'connected';
      cls = 'ok';
    }
    this.status.textContent = status;
    this.status.dataset.status = cls === 'ok' ? 'connected' : cls;
    this.status.className = `field status ${cls}`;
    this.who.textContent = s ? `${s.project} · ${s.id}${s.run ? ` · ${s.run}` : ''}` : '';
    this.state.textContent = s?.state ?? '—';
    this.state.dataset.state = s?.state ?? '';
    this.renderNumbers(s);
    const states = controlStates(s, this.busy);
    this.renderControls(states);
  }

  private renderNumbers(s: SessionSummary | undefined): void {
    const live = s && this.live?.session === s.id ? this.live : undefined;
    const step = s ? Math.max(s.step, live?.step ?? 0) : 0;
    const epoch = s ? Math.max(s.epoch, live?.epoch ?? 0) : 0;
    const sps = s && s.state === 'running' ? (live?.samplesPerS ?? s.samplesPerS) : null;
    this.step.textContent = s ? `step ${step.toLocaleString()}` : '';
    this.step.dataset.value = s ? String(step) : '';
    this.epoch.textContent = s ? `epoch ${epoch}` : '';
    this.speed.textContent = sps ? `${Math.round(sps).toLocaleString()} samples/s` : '';
  }

  private renderControls(states: ReturnType<typeof controlStates>): void {
    for (const [c, b] of this.buttons) {
      b.disabled = !states[c].enabled;
      b.title = states[c].title;
      b.setAttribute('aria-label', `${b.textContent}: ${states[c].title}`);
    }
  }
}
