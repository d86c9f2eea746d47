/** What the VS Code status bar item says (pure, so it is tested without VS Code). */
import type { SessionSummary } from './session';

/** The item's text and tooltip for the current sessions (pure). */
export function statusText(listening: boolean, sessions: readonly SessionSummary[], error?: string): { text: string; tooltip: string } {
  if (!listening) return { text: '$(circle-slash) OnTheFly', tooltip: error ? `OnTheFly is not listening: ${error}` : 'OnTheFly dashboard is not started' };
  const live = sessions.filter((s) => s.connected);
  if (!live.length) return { text: '$(circle-outline) OnTheFly: waiting', tooltip: 'Waiting for a training process: run a script that uses onthefly' };
  const s = live[0];
  const more = live.length > 1 ? ` (+${live.length - 1})` : '';
  const icon = s.state === 'paused' ? '$(debug-pause)' : s.state === 'running' ? '$(play)' : s.state === 'testing' ? '$(beaker)' : '$(plug)';
  const what = s.state === 'running' || s.state === 'paused' || s.state === 'testing' ? `${s.state} · step ${s.step}` : 'connected';
  return { text: `${icon} OnTheFly: ${what}${more}`, tooltip: `${s.project} · session ${s.id}${s.run ? ` · run ${s.run}` : ''}\nClick to show the dashboard` };
}
