/**
 * A fake training process for the tests: a real TCP client that speaks the
 * link protocol (handshake, notifications, answers to requests), with knobs
 * to break each step of the handshake on purpose.
 */
import * as net from 'node:net';
import { LineSplitter } from '../../src/protocol/framing';
import { dashboardProof, newNonce, parseDashboardHello, parseWelcome, proofMatches, trainerHello, trainerProof } from '../../src/protocol/handshake';
import { type Message, decode, encode } from '../../src/protocol/codec';
import { PROTOCOL_VERSION } from '../../src/protocol/spec';
import type { ClientInfo } from '../../src/protocol/types';

export type Handler = (params: Record<string, unknown>) => unknown;

export interface FakeTrainerOptions {
  port: number;
  token: string | undefined;
  session?: string;
  protocol?: number;
  /** Replace the computed proof. */
  proof?: string;
  /** Use this nonce instead of a fresh one. */
  nonce?: string;
  handlers?: Record<string, Handler>;
}

export class FakeTrainer {
  readonly socket: net.Socket;
  readonly received: Message[] = [];
  /** The dashboard's nonce and the proof we sent, for replay tests. */
  dashboardNonce = '';
  sentProof = '';
  sentNonce = '';
  private splitter = new LineSplitter();
  private waiters: Array<() => void> = [];
  closed: Promise<void>;
  welcomed: Promise<boolean>;
  private settleWelcome!: (ok: boolean) => void;

  constructor(private readonly o: FakeTrainerOptions) {
    this.socket = net.connect(o.port, '127.0.0.1');
    this.welcomed = new Promise((r) => (this.settleWelcome = r));
    this.closed = new Promise((resolve) => this.socket.on('close', () => {
      this.settleWelcome(false);
      resolve();
    }));
    this.socket.on('error', () => {});
    this.socket.on('data', (d: Buffer) => {
      for (const line of this.splitter.push(d)) this.onMessage(decode(line));
    });
  }

  get client(): ClientInfo {
    return { version: '0.0.0-test', pid: process.pid, session: this.o.session ?? 'sess-1', project: 'demo', run: 'run-1', host: 'localhost' };
  }

  send(m: Message): void {
    this.socket.write(encode(m));
  }

  notify(method: string, params: Record<string, unknown>): void {
    this.send({ kind: 'notification', method, params });
  }

  writeRaw(data: string | Buffer): boolean {
    return this.socket.write(data);
  }

  close(): void {
    this.socket.destroy();
  }

  /** Wait until a message matching `pred` arrives. */
  async waitFor(pred: (m: Message) => boolean, timeoutMs = 3000): Promise<Message> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.find(pred);
      if (found) return found;
      if (Date.now() > deadline) throw new Error('timed out waiting for a message from the dashboard');
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  private onMessage(m: Message): void {
    this.received.push(m);
    for (const w of this.waiters.splice(0)) w();
    if (m.kind === 'notification' && m.method === 'hello') {
      const [, d] = parseDashboardHello(m);
      this.dashboardNonce = d;
      if (this.o.token === undefined) return; // no token: nothing to answer with
      const t = this.o.nonce ?? newNonce();
      this.sentNonce = t;
      this.sentProof = this.o.proof ?? trainerProof(this.o.token, d, t);
      this.send(trainerHello(t, this.sentProof, this.client, this.o.protocol ?? PROTOCOL_VERSION));
    } else if (m.kind === 'notification' && m.method === 'welcome') {
      const ok = this.o.token !== undefined && proofMatches(dashboardProof(this.o.token, this.sentNonce, this.dashboardNonce), parseWelcome(m));
      this.settleWelcome(ok);
    } else if (m.kind === 'request') {
      const h = this.o.handlers?.[m.method];
      if (!h) {
        this.send({ kind: 'error', id: m.id, code: -32601, message: `unknown method '${m.method}'` });
        return;
      }
      try {
        this.send({ kind: 'response', id: m.id, result: h(m.params as Record<string, unknown>) });
      } catch (e) {
        this.send({ kind: 'error', id: m.id, code: -32000, message: (e as Error).message });
      }
    }
  }
}

/** Resolve after the event loop has had `ms` to run. */
export const tick = (ms = 20): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `cond` until it holds or fail after `timeoutMs`. */
export async function until(cond: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await tick(10);
  }
}
