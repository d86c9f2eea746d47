/**
 * Which controls apply to a session, and why not when they do not: a pure
 * function of the session summary, so the buttons' disabled state and tooltip
 * are decided in one place.
 */
import type { SessionSummary } from '../../src/bridge/session';

export type Control = 'pause' | 'resume' | 'stop' | 'test' | 'checkpoint' | 'export-session' | 'load-session';
export interface ControlState {
  enabled: boolean;
  /** The tooltip: what the control does, or why it is disabled. */
  title: string;
}

const DOES: Record<Control, string> = {
  pause: 'Pause training at the next batch boundary',
  resume: 'Resume training',
  stop: 'Stop training at the next batch boundary (the run is finished and flushed)',
  test: 'Evaluate the model on the test split now; training waits meanwhile',
  checkpoint: 'Save a checkpoint of the current run now',
  'export-session': 'Export this session to a .zip file',
  'load-session': 'Load an exported session (.zip) into the dashboard',
};

export function controlStates(s: SessionSummary | undefined, busy: ReadonlySet<Control> = new Set()): Record<Control, ControlState> {
  const out = {} as Record<Control, ControlState>;
  const no = (why: string): ControlState => ({ enabled: false, title: why });
  for (const c of Object.keys(DOES) as Control[]) {
    out[c] = { enabled: true, title: DOES[c] };
    if (c === 'load-session') continue;
    if (!s) {
      out[c] = no('No training process is connected: start a script that uses onthefly');
      continue;
    }
    if (c === 'export-session') continue; // an export reads the store, connected or not
    if (!s.connected) out[c] = no('The training process of this session is not connected');
    else if (s.readOnly) out[c] = no('A loaded session is read-only: it has no model to drive');
    else if (busy.has(c)) out[c] = no(`${DOES[c].split(' ')[0]} is in progress…`);
    else {
      const st = s.state;
      if (c === 'pause' && st !== 'running') out[c] = no(st === 'paused' ? 'Already paused' : `Nothing to pause: the run is ${st ?? 'starting'}`);
      if (c === 'resume' && st !== 'paused' && st !== 'finished') out[c] = no(st === 'running' ? 'Already running' : `Nothing to resume: the run is ${st ?? 'starting'}`);
      if (c === 'resume' && st === 'finished') out[c] = { enabled: true, title: 'Train one more epoch' };
      if (c === 'stop' && (st === 'finished' || st === 'idle')) out[c] = no(st === 'finished' ? 'The run has finished' : 'Training has not started yet');
      if ((c === 'test' || c === 'checkpoint') && st === 'testing') out[c] = no('A test is running: wait for it to finish');
      if ((c === 'test' || c === 'checkpoint') && st === 'idle') out[c] = no('Training has not started yet: there is no model state to use');
    }
  }
  return out;
}
