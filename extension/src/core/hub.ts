/**
 * The host core: listens for training processes, authenticates them, keeps
 * the session registry, forwards requests and fans events out to every view
 * (the VS Code webview, browser tabs). No `vscode` import: the adapters give it
 * a port, the paths' environment and a logger.
 */
import * as net from 'node:net';
import { HOST, METHODS } from '../protocol/spec';
import type { ClientInfo, StatePayload, StepsPayload, TrainerNotification } from '../protocol/types';
import { CLOSED_CODE, NonceLedger, RpcError, TrainerConnection, UNKNOWN_SESSION_CODE } from './connection';
import { Emitter } from './emitter';
import type { Disposable, Logger } from './interfaces';
import { type PathEnv, tokenPath } from './paths';
import { SessionRegistry, type SessionSummary } from './registry';
import { removeTokenFile, writeTokenFile } from './token';

export type CoreEvent =
  | { type: 'sessions'; sessions: SessionSummary[] }
  | ({ type: 'notification'; session: string } & TrainerNotification)
  | { type: 'link'; listening: boolean; port: number; error?: string };

export interface CoreOptions {
  port: number;
  pathEnv: PathEnv;
  logger: Logger;
  /** Use this token instead of writing a token file (`ONTHEFLY_TOKEN`). */
  token?: string;
  handshakeTimeoutMs?: number;
  maxLineBytes?: number;
}

/** How long each method may take before the dashboard gives up waiting (ms). */
export function requestTimeout(method: string): number {
  if (method === 'test') return 15 * 60_000;
  if (method === 'checkpoint' || method === 'export_slice') return 5 * 60_000;
  if (METHODS[method]?.trainingThread) return 60_000;
  return 60_000;
}

/** The last step (and epoch) of a columnar `steps` payload. */
export function lastOfSteps(params: StepsPayload): { step?: number; epoch?: number } {
  const steps = params.step;
  const epochs: unknown[] | undefined = params.epoch;
  const i = steps.length - 1;
  const step = steps[i];
  const epoch = epochs?.[i];
  return { step: typeof step === 'number' ? step : undefined, epoch: typeof epoch === 'number' ? epoch : undefined };
}

export class DashboardCore {
  readonly events: Emitter<CoreEvent>;
  readonly registry = new SessionRegistry();
  readonly tokenFile: string;
  private server: net.Server | undefined;
  private token = '';
  private readonly nonces = new NonceLedger();
  private readonly connections = new Set<TrainerConnection>();
  private listening = false;
  private lastError: string | undefined;

  constructor(private readonly options: CoreOptions) {
    this.events = new Emitter<CoreEvent>((e) => options.logger.error(`a dashboard view failed on an event: ${String(e)}`));
    this.tokenFile = tokenPath(options.pathEnv, options.port);
  }

  get port(): number {
    return this.options.port;
  }

  /** The current link status, as the views show it. */
  get link(): CoreEvent & { type: 'link' } {
    return { type: 'link', listening: this.listening, port: this.options.port, error: this.lastError };
  }

  /**
   * Listen on 127.0.0.1:port and write the token file.
   *
   * @throws Error saying what holds the port when it is taken.
   */
  async start(): Promise<void> {
    const server = net.createServer((socket) => this.accept(socket));
    this.server = server;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.options.port, HOST, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      this.lastError =
        err.code === 'EADDRINUSE'
          ? `port ${this.options.port} on ${HOST} is taken: another dashboard (another VS Code window or \`npm run dashboard\`) is listening; close it, or set onthefly.port / ONTHEFLY_DASHBOARD_PORT on both sides`
          : `cannot listen on ${HOST}:${this.options.port}: ${err.message}`;
      this.server = undefined;
      this.events.fire(this.link);
      throw new Error(this.lastError);
    }
    server.on('error', (e) => this.options.logger.error(`trainer link server: ${e.message}`));
    this.token = this.options.token ?? writeTokenFile(this.tokenFile);
    this.listening = true;
    this.lastError = undefined;
    this.options.logger.info(`waiting for training processes on tcp://${HOST}:${this.options.port} (token: ${this.options.token ? 'ONTHEFLY_TOKEN' : this.tokenFile})`);
    this.events.fire(this.link);
  }

  /** Close every connection, stop listening and remove the token file. */
  async stop(): Promise<void> {
    for (const c of [...this.connections]) c.close('the dashboard closed');
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    if (this.listening && !this.options.token) removeTokenFile(this.tokenFile, this.token);
    this.listening = false;
  }

  sessions(): SessionSummary[] {
    return this.registry.summaries();
  }

  /** Subscribe to every core event; the current sessions and link status come first. */
  subscribe(listener: (e: CoreEvent) => void): Disposable {
    listener(this.link);
    listener({ type: 'sessions', sessions: this.sessions() });
    return this.events.subscribe(listener);
  }

  /**
   * Call a method of a session's training process.
   *
   * @throws RpcError: the trainer's error, a timeout, or {@link UNKNOWN_SESSION_CODE}
   *   when no such session is connected.
   */
  async call(session: string, method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const entry = this.registry.get(session);
    if (!entry) {
      throw new RpcError(`no session '${session}' is known to this dashboard: start the training script, or pick a session from the list`, UNKNOWN_SESSION_CODE);
    }
    if (!entry.connection?.isOpen) {
      throw new RpcError(`session '${session}' is not connected: its training process ended or lost the link`, CLOSED_CODE);
    }
    const result = await entry.connection.request(method, params, requestTimeout(method));
    if (method === 'status' && result && typeof result === 'object') this.onState(session, result as StatePayload);
    return result;
  }

  /** Forget a disconnected session. */
  forget(session: string): void {
    if (this.registry.forget(session)) this.fireSessions();
  }

  private accept(socket: net.Socket): void {
    const conn = new TrainerConnection(socket, {
      token: this.token,
      logger: this.options.logger,
      nonces: this.nonces,
      handshakeTimeoutMs: this.options.handshakeTimeoutMs,
      maxLineBytes: this.options.maxLineBytes,
    });
    this.connections.add(conn);
    conn.closed.subscribe(({ reason }) => {
      this.connections.delete(conn);
      if (this.registry.detach(conn)) {
        this.options.logger.info(`session ${conn.client?.session} disconnected: ${reason}`);
        this.fireSessions();
      }
    });
    conn.ready.then(
      (client) => this.onReady(conn, client),
      () => {},
    );
  }

  private onReady(conn: TrainerConnection, client: ClientInfo): void {
    const replaced = this.registry.attach(conn, Date.now());
    replaced?.close(`session ${client.session} connected again`);
    this.options.logger.info(`session ${client.session} connected (project ${String(client.project ?? '?')}, pid ${String(client.pid ?? '?')})`);
    conn.notifications.subscribe((n) => {
      if (n.method === 'state') this.onState(client.session, n.params);
      else if (n.method === 'steps') {
        const { step, epoch } = lastOfSteps(n.params);
        if (step !== undefined) this.registry.advance(client.session, step, epoch);
      }
      this.events.fire({ type: 'notification', session: client.session, ...n });
    });
    this.fireSessions();
    // The state as it is now; the trainer also sends one, whichever comes first is fine.
    conn.request('status', {}, 10_000).then(
      (s) => this.onState(client.session, s as StatePayload),
      (e: Error) => this.options.logger.warn(`status of session ${client.session}: ${e.message}`),
    );
  }

  private onState(session: string, state: StatePayload): void {
    this.registry.setState(session, state);
    this.fireSessions();
  }

  private fireSessions(): void {
    this.events.fire({ type: 'sessions', sessions: this.sessions() });
  }
}
