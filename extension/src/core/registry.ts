/**
 * The sessions the dashboard knows, by session id: one entry per training
 * process (or loaded session) that completed the handshake. A process that
 * reconnects under the same session id takes its entry back; a newer
 * connection replaces an older one.
 */
import type { StatePayload, ClientInfo } from '../protocol/types';
import type { SessionSummary } from '../bridge/session';
import type { TrainerConnection } from './connection';

export type { SessionSummary };

export interface SessionEntry {
  client: ClientInfo;
  connection: TrainerConnection | undefined;
  state: StatePayload | undefined;
  connectedAt: number;
}

/** The summary of an entry: pure. */
export function summarize(id: string, e: SessionEntry): SessionSummary {
  const c = e.client;
  return {
    id,
    project: typeof c.project === 'string' ? c.project : '',
    run: (e.state?.run ?? c.run ?? null) as string | null,
    host: typeof c.host === 'string' ? c.host : '',
    pid: typeof c.pid === 'number' ? c.pid : null,
    version: typeof c.version === 'string' ? c.version : '',
    connected: !!e.connection?.isOpen,
    readOnly: c.served === true || c.readonly === true,
    state: e.state?.state ?? null,
    step: e.state?.step ?? 0,
    epoch: e.state?.epoch ?? 0,
    samplesPerS: e.state?.samples_per_s ?? null,
    connectedAt: e.connectedAt,
  };
}

export class SessionRegistry {
  private entries = new Map<string, SessionEntry>();

  get(id: string): SessionEntry | undefined {
    return this.entries.get(id);
  }

  /**
   * Attach an open connection to its session; returns the connection it replaces, if any.
   */
  attach(connection: TrainerConnection, now: number): TrainerConnection | undefined {
    const client = connection.client;
    if (!client) throw new Error('attach needs a connection that completed the handshake');
    const previous = this.entries.get(client.session);
    this.entries.set(client.session, {
      client,
      connection,
      state: previous?.state,
      connectedAt: now,
    });
    const old = previous?.connection;
    return old && old !== connection ? old : undefined;
  }

  /** Mark the session of `connection` disconnected (only if that connection still owns it). */
  detach(connection: TrainerConnection): boolean {
    const id = connection.client?.session;
    if (!id) return false;
    const e = this.entries.get(id);
    if (!e || e.connection !== connection) return false;
    e.connection = undefined;
    return true;
  }

  setState(id: string, state: StatePayload): void {
    const e = this.entries.get(id);
    if (e) e.state = state;
  }

  /**
   * Move the step (and epoch) of a session forward from a `steps` message,
   * quietly: views follow steps themselves; this keeps snapshots current.
   */
  advance(id: string, step: number, epoch?: number): void {
    const e = this.entries.get(id);
    if (!e?.state || !(step > e.state.step)) return;
    e.state = { ...e.state, step, epoch: epoch ?? e.state.epoch };
  }

  /** Forget disconnected sessions (the user closed them). */
  forget(id: string): boolean {
    const e = this.entries.get(id);
    if (!e || e.connection?.isOpen) return false;
    return this.entries.delete(id);
  }

  summaries(): SessionSummary[] {
    return [...this.entries].map(([id, e]) => summarize(id, e)).sort((a, b) => b.connectedAt - a.connectedAt);
  }
}
