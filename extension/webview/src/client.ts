/**
 * Requests from the view: training-process methods (through the host core)
 * and host actions (save a file, export or load a session), as promises.
 */
import type { ToView } from '../../src/bridge/messages';
import type { Methods, MethodName } from '../../src/protocol/types';
import type { HostChannel } from './host';

export class RequestError extends Error {
  constructor(message: string, readonly code: number) {
    super(message);
  }
}

interface Waiter {
  resolve(v: unknown): void;
  reject(e: Error): void;
}

export class Client {
  private next = 1;
  private waiting = new Map<number, Waiter>();

  constructor(private readonly host: HostChannel) {}

  /** Feed host messages that answer requests; returns true when it was one. */
  handle(m: ToView): boolean {
    if (m.type !== 'rpcResult' && m.type !== 'rpcError' && m.type !== 'fileDone') return false;
    const w = this.waiting.get(m.requestId);
    if (!w) return true;
    this.waiting.delete(m.requestId);
    if (m.type === 'rpcResult') w.resolve(m.result);
    else if (m.type === 'rpcError') w.reject(new RequestError(m.message, m.code));
    else if (m.ok) w.resolve(m);
    else w.reject(new RequestError(m.message, 0));
    return true;
  }

  call<M extends MethodName>(session: string, method: M, params: Methods[M]['params'] | Record<string, unknown> = {}): Promise<Methods[M]['result']> {
    const requestId = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(requestId, { resolve: resolve as (v: unknown) => void, reject });
      this.host.post({ type: 'rpc', requestId, session, method, params: params as Record<string, unknown> });
    });
  }

  /** Rows of a read-only query as objects keyed by column. */
  async rows<T = Record<string, unknown>>(session: string, sql: string, params: unknown[] = [], limit = 100_000): Promise<T[]> {
    const r = await this.call(session, 'query', { sql, params, limit });
    const cols = r.columns ?? [];
    return (r.rows ?? []).map((row) => Object.fromEntries(cols.map((c, i) => [c, row[i]])) as T);
  }

  /** Columns of a read-only query, one array per column. */
  async columns(session: string, sql: string, params: unknown[] = [], limit = 100_000): Promise<Record<string, unknown[]>> {
    const r = await this.call(session, 'query', { sql, params, limit });
    const cols = r.columns ?? [];
    const out: Record<string, unknown[]> = Object.fromEntries(cols.map((c) => [c, [] as unknown[]]));
    for (const row of r.rows ?? []) for (let i = 0; i < cols.length; i++) out[cols[i]].push(row[i]);
    return out;
  }

  private file(m: { type: 'saveFile' | 'exportSession' | 'loadSession' } & Record<string, unknown>): Promise<{ message: string; path?: string }> {
    const requestId = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(requestId, { resolve: resolve as (v: unknown) => void, reject });
      this.host.post({ ...m, requestId } as never);
    });
  }

  saveFile(name: string, data: string, encoding: 'utf8' | 'base64') {
    return this.file({ type: 'saveFile', name, data, encoding });
  }
  exportSession(session: string, path?: string) {
    return this.file({ type: 'exportSession', session, path });
  }
  loadSession(path?: string) {
    return this.file({ type: 'loadSession', path });
  }
}
