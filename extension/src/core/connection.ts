/**
 * One training process's connection, seen from the dashboard: the handshake,
 * then a JSON-RPC client (request ids, timeouts) and a stream of checked
 * notifications. Malformed input closes this connection and nothing else.
 */
import type { Socket } from 'node:net';
import { FrameTooLarge, LineSplitter } from '../protocol/framing';
import {
  HandshakeError,
  dashboardHello,
  dashboardProof,
  newNonce,
  parseTrainerHello,
  proofMatches,
  trainerProof,
  versionMessage,
  welcome,
} from '../protocol/handshake';
import { type Message, MessageError, checkNotification, decode, encode, isTrainerNotification } from '../protocol/codec';
import { ERROR_CODES, MAX_LINE_BYTES, PROTOCOL_VERSION } from '../protocol/spec';
import type { ClientInfo, TrainerNotification } from '../protocol/types';
import { Emitter } from './emitter';
import type { Logger } from './interfaces';

/** A request that failed: the training process's error reply, a timeout or a closed link. */
export class RpcError extends Error {
  constructor(
    message: string,
    readonly code: number,
    readonly data?: unknown,
  ) {
    super(message);
    this.name = 'RpcError';
  }
}
/** Codes of failures on the dashboard's side (outside the JSON-RPC and protocol ranges). */
export const TIMEOUT_CODE = -31000;
export const CLOSED_CODE = -31001;
export const UNKNOWN_SESSION_CODE = -31002;

/** Trainer nonces already used, so a replayed hello fails even with a valid proof. Bounded. */
export class NonceLedger {
  private seen = new Set<string>();
  constructor(private readonly capacity = 4096) {}
  /** True the first time a nonce is offered. */
  claim(nonce: string): boolean {
    if (this.seen.has(nonce)) return false;
    this.seen.add(nonce);
    if (this.seen.size > this.capacity) this.seen.delete(this.seen.values().next().value as string);
    return true;
  }
}

export interface ConnectionOptions {
  token: string;
  logger: Logger;
  nonces: NonceLedger;
  handshakeTimeoutMs?: number;
  maxLineBytes?: number;
}

interface Pending {
  method: string;
  resolve(result: unknown): void;
  reject(error: RpcError): void;
  timer: NodeJS.Timeout;
}

type Phase = 'handshake' | 'open' | 'closed';

export class TrainerConnection {
  readonly notifications = new Emitter<TrainerNotification>();
  readonly closed = new Emitter<{ reason: string }>();
  /** Resolves with the client once the welcome is sent; rejects when the handshake fails. */
  readonly ready: Promise<ClientInfo>;
  client: ClientInfo | undefined;
  closeReason: string | undefined;

  private phase: Phase = 'handshake';
  private readonly nonce = newNonce();
  private readonly splitter: LineSplitter;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private settleReady!: { resolve(c: ClientInfo): void; reject(e: Error): void };
  /** Notifications dropped because their payload broke the protocol. */
  dropped = 0;

  constructor(
    private readonly socket: Socket,
    private readonly options: ConnectionOptions,
  ) {
    this.splitter = new LineSplitter(options.maxLineBytes ?? MAX_LINE_BYTES);
    this.ready = new Promise<ClientInfo>((resolve, reject) => {
      this.settleReady = { resolve, reject };
    });
    this.ready.catch(() => {}); // observed through `closed` as well
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e) => this.close(`socket error: ${e.message}`));
    socket.on('close', () => this.close('the training process closed the connection'));
    this.handshakeTimer = setTimeout(
      () => this.fail(new HandshakeError('no hello from the training process in time: is it an onthefly training process?', 'timeout')),
      options.handshakeTimeoutMs ?? 5_000,
    );
    this.send(dashboardHello(this.nonce));
  }

  get isOpen(): boolean {
    return this.phase === 'open';
  }

  get remote(): string {
    return `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? '?'}`;
  }

  /**
   * Send a request and wait for its reply.
   *
   * @throws RpcError with the training process's code and message, {@link TIMEOUT_CODE}
   *   after `timeoutMs`, or {@link CLOSED_CODE} when the link closes first.
   */
  request(method: string, params: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<unknown> {
    if (this.phase !== 'open') {
      return Promise.reject(new RpcError(`cannot call ${method}: the training process is not connected`, CLOSED_CODE));
    }
    const id = this.nextId++;
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RpcError(`${method} got no answer in ${Math.round(timeoutMs / 1000)} s: the training process may be busy or stuck; try again`, TIMEOUT_CODE));
      }, timeoutMs);
      this.pending.set(id, { method, resolve, reject, timer });
      this.send({ kind: 'request', id, method, params });
    });
  }

  /** Close the connection (idempotent); pending requests fail with {@link CLOSED_CODE}. */
  close(reason: string): void {
    if (this.phase === 'closed') return;
    const wasOpen = this.phase === 'open';
    this.phase = 'closed';
    this.closeReason = reason;
    clearTimeout(this.handshakeTimer);
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new RpcError(`${p.method} failed: the link closed (${reason})`, CLOSED_CODE));
      this.pending.delete(id);
    }
    if (!wasOpen) this.settleReady.reject(new HandshakeError(reason, 'bad-message'));
    this.socket.destroy();
    this.closed.fire({ reason });
  }

  private send(m: Message): void {
    if (this.phase === 'closed' || this.socket.destroyed) return;
    this.socket.write(encode(m));
  }

  private fail(e: Error): void {
    this.options.logger.warn(`trainer link ${this.remote}: ${e.message}`);
    this.close(e.message);
  }

  private onData(chunk: Buffer): void {
    let lines: string[];
    try {
      lines = this.splitter.push(chunk);
    } catch (e) {
      if (e instanceof FrameTooLarge) return this.fail(e);
      throw e;
    }
    for (const line of lines) {
      if (this.phase === 'closed') return;
      let m: Message;
      try {
        m = decode(line);
      } catch (e) {
        if (e instanceof MessageError) {
          // Tell the other side why, then close: a broken stream cannot be resynchronised safely.
          this.send({ kind: 'error', id: e.id, code: e.code, message: e.message });
          return this.fail(new Error(`malformed line from the training process: ${e.message}`));
        }
        throw e;
      }
      if (this.phase === 'handshake') this.onHandshake(m);
      else this.onMessage(m);
    }
  }

  private onHandshake(m: Message): void {
    try {
      const hello = parseTrainerHello(m);
      if (hello.protocol !== PROTOCOL_VERSION) {
        throw new HandshakeError(versionMessage('the training process', hello.protocol), 'version');
      }
      const expected = trainerProof(this.options.token, this.nonce, hello.nonce);
      if (!proofMatches(expected, hello.proof)) {
        throw new HandshakeError("the training process's proof does not match this dashboard's token: it read another dashboard's token file, or none", 'bad-proof');
      }
      if (!this.options.nonces.claim(hello.nonce)) {
        throw new HandshakeError('the training process reused a nonce of an earlier connection: a replayed hello is refused', 'replay');
      }
      clearTimeout(this.handshakeTimer);
      this.send(welcome(dashboardProof(this.options.token, hello.nonce, this.nonce)));
      this.phase = 'open';
      this.client = hello.client;
      this.settleReady.resolve(hello.client);
    } catch (e) {
      if (e instanceof HandshakeError) {
        this.settleReady.reject(e);
        return this.fail(e);
      }
      throw e;
    }
  }

  private onMessage(m: Message): void {
    switch (m.kind) {
      case 'notification': {
        const n = { method: m.method, params: m.params };
        if (!isTrainerNotification(n)) {
          this.dropped++;
          const problems = checkNotification(m.method, m.params);
          this.options.logger.warn(`dropped '${m.method}' from session ${this.client?.session}: ${problems.slice(0, 3).join('; ')}`);
          return;
        }
        this.notifications.fire(n);
        return;
      }
      case 'request':
        this.send({
          kind: 'error',
          id: m.id,
          code: ERROR_CODES.method_not_found,
          message: `the dashboard answers no requests, got '${m.method}': the training process sends notifications only`,
        });
        return;
      case 'response':
      case 'error': {
        const id = typeof m.id === 'number' ? m.id : Number.NaN;
        const p = this.pending.get(id);
        if (!p) {
          this.options.logger.warn(`a reply for unknown request id ${String(m.id)} from session ${this.client?.session} was ignored`);
          return;
        }
        this.pending.delete(id);
        clearTimeout(p.timer);
        if (m.kind === 'response') p.resolve(m.result);
        else p.reject(new RpcError(m.message, m.code, m.data));
      }
    }
  }
}
