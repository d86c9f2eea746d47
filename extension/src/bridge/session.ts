/** A session as the views show it: shared by the host core and the webview. */
import type { RunState } from '../protocol/spec';

/** What the views need to show a session in the session bar. */
export interface SessionSummary {
  id: string;
  project: string;
  run: string | null;
  host: string;
  pid: number | null;
  version: string;
  connected: boolean;
  /** A loaded session served read-only (`onthefly serve`). */
  readOnly: boolean;
  state: RunState | null;
  step: number;
  epoch: number;
  samplesPerS: number | null;
  connectedAt: number;
}
