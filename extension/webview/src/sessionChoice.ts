/**
 * Which session the dashboard shows as the list of sessions changes: the
 * one shown before a reload, else a connected one, else the first; a live
 * session replaces one that went away; a session's history is read when it
 * connects (again). Pure: {@link SessionChoice.onList} says what to do.
 */
import type { SessionSummary } from '../../src/bridge/session';

export type SessionStep =
  /** Show another session. */
  | { kind: 'pick'; id: string }
  /** The shown session (re)connected: read its history. */
  | { kind: 'load'; session: SessionSummary }
  /** The trainer of the shown session moved to another run, and the dashboard follows. */
  | { kind: 'follow'; run: string }
  | { kind: 'none' };

export class SessionChoice {
  /** Whether each session was connected when last seen. */
  private connected = new Map<string, boolean>();

  /**
   * A new list of sessions.
   *
   * @param current the session shown, if any.
   * @param remembered the session shown before the view was reloaded.
   * @param follows whether the dashboard follows the trainer's run to `run` (see ShownRun.shouldFollow).
   */
  onList(list: readonly SessionSummary[], current: string | undefined, remembered: string | undefined, follows: (run: string | null) => boolean): SessionStep {
    if (!current || !list.some((s) => s.id === current)) {
      const pick = list.find((s) => s.id === remembered) ?? list.find((s) => s.connected) ?? list[0];
      if (pick) return { kind: 'pick', id: pick.id };
    }
    const s = list.find((x) => x.id === current);
    if (!s) return { kind: 'none' };
    const live = list.find((x) => x.connected);
    if (!s.connected && live) return { kind: 'pick', id: live.id };
    const was = this.connected.get(s.id) ?? false;
    this.connected.set(s.id, s.connected);
    if (s.connected && !was) return { kind: 'load', session: s };
    if (s.connected && s.run && follows(s.run)) return { kind: 'follow', run: s.run };
    return { kind: 'none' };
  }

  /** A session was picked: true when it is connected, so its history is read now. */
  picked(id: string, s: SessionSummary | undefined): boolean {
    this.connected.set(id, !!s?.connected);
    return !!s?.connected;
  }
}
