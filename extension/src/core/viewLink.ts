/**
 * One view (a webview panel or a browser tab) attached to the core: forwards
 * its requests, fans core events out to it, and holds messages until the view
 * says `ready`. Actions the host does itself (save a file, export or load a
 * session) go to a {@link HostActions} the adapter implements.
 */
import type { FromView, ToView } from '../bridge/messages';
import { RpcError } from './connection';
import type { DashboardCore } from './hub';
import type { Disposable, Logger } from './interfaces';

/** What a view asks of its host beyond the training processes; each answers a sentence for the user. */
export interface HostActions {
  saveFile(name: string, data: Buffer): Promise<{ ok: boolean; message: string; path?: string }>;
  exportSession(session: string, path?: string): Promise<{ ok: boolean; message: string; path?: string }>;
  loadSession(path?: string): Promise<{ ok: boolean; message: string; path?: string }>;
}

export interface ViewTransport {
  post(message: ToView): void;
}

export class ViewLink implements Disposable {
  private ready = false;
  private held: ToView[] = [];
  private subscription: Disposable | undefined;
  private disposed = false;

  constructor(
    private readonly core: DashboardCore,
    private readonly transport: ViewTransport,
    private readonly actions: HostActions,
    private readonly logger: Logger,
    private readonly host: ToView,
  ) {}

  /** Handle one message from the view. */
  receive(message: FromView): void {
    switch (message.type) {
      case 'ready':
        this.onReady();
        return;
      case 'rpc':
        this.core.call(message.session, message.method, message.params).then(
          (result) => this.post({ type: 'rpcResult', requestId: message.requestId, result }),
          (e: Error) =>
            this.post({
              type: 'rpcError',
              requestId: message.requestId,
              code: e instanceof RpcError ? e.code : -32603,
              message: e.message,
            }),
        );
        return;
      case 'forgetSession':
        this.core.forget(message.session);
        return;
      case 'saveFile':
        this.answer(message.requestId, () =>
          this.actions.saveFile(message.name, Buffer.from(message.data, message.encoding === 'base64' ? 'base64' : 'utf8')),
        );
        return;
      case 'exportSession':
        this.answer(message.requestId, () => this.actions.exportSession(message.session, message.path));
        return;
      case 'loadSession':
        this.answer(message.requestId, () => this.actions.loadSession(message.path));
        return;
    }
  }

  dispose(): void {
    this.disposed = true;
    this.subscription?.dispose();
    this.held = [];
  }

  private onReady(): void {
    // A reloaded view says ready again: start over with a fresh snapshot.
    this.subscription?.dispose();
    const held = this.held;
    this.held = [];
    this.ready = true;
    this.post(this.host);
    this.subscription = this.core.subscribe((e) => this.post(e));
    for (const m of held) this.post(m);
  }

  private answer(requestId: number, run: () => Promise<{ ok: boolean; message: string; path?: string }>): void {
    run().then(
      (r) => this.post({ type: 'fileDone', requestId, ...r }),
      (e: Error) => this.post({ type: 'fileDone', requestId, ok: false, message: e.message }),
    );
  }

  private post(message: ToView): void {
    if (this.disposed) return;
    if (!this.ready) {
      this.held.push(message);
      return;
    }
    try {
      this.transport.post(message);
    } catch (e) {
      this.logger.warn(`could not reach a dashboard view: ${(e as Error).message}`);
    }
  }
}
