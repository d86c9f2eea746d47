/**
 * The link's mutual authentication (mirrors `onthefly/link/handshake.py`):
 *
 * 1. dashboard -> `hello {protocol, nonce: D}`
 * 2. trainer   -> `hello {protocol, nonce: T, proof: HMAC(token, "onthefly-trainer:" + D + ":" + T), client}`
 * 3. dashboard -> `welcome {proof: HMAC(token, "onthefly-dashboard:" + T + ":" + D)}`
 *
 * HMAC-SHA256 keyed with the token's 32 raw bytes; nonces are 16 random bytes
 * in hex; proofs are hex. Pure functions over Node's crypto.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Message, Notification } from './codec';
import { HELLO, PROTOCOL_VERSION, WELCOME } from './spec';
import type { ClientInfo } from './types';

export const NONCE_BYTES = 16;
export const TOKEN_BYTES = 32;
export const TRAINER_PREFIX = 'onthefly-trainer:';
export const DASHBOARD_PREFIX = 'onthefly-dashboard:';
const NONCE_RE = /^[0-9a-f]{32}$/;
const PROOF_RE = /^[0-9a-f]{64}$/;
const TOKEN_RE = /^[0-9a-fA-F]{64}$/;

export type HandshakeFailure = 'no-token' | 'bad-message' | 'bad-proof' | 'version' | 'replay' | 'timeout';

/** The handshake failed; the connection is closed. */
export class HandshakeError extends Error {
  constructor(
    message: string,
    readonly reason: HandshakeFailure,
  ) {
    super(message);
    this.name = 'HandshakeError';
  }
}

/** The sentence both sides show when the versions differ (same words as the Python side). */
export function versionMessage(peer: string, theirs: unknown, ours: number = PROTOCOL_VERSION): string {
  return `${peer} speaks protocol ${String(theirs)}, this onthefly speaks ${ours}: update the OnTheFly extension or onthefly-ai`;
}

export function newNonce(): string {
  return randomBytes(NONCE_BYTES).toString('hex');
}

export function newToken(): string {
  return randomBytes(TOKEN_BYTES).toString('hex');
}

/** The token's raw bytes. @throws Error when it is not 64 hex digits. */
export function tokenKey(token: string): Buffer {
  const t = token.trim();
  if (!TOKEN_RE.test(t)) {
    throw new Error(`the token must be ${TOKEN_BYTES * 2} hex digits, got ${t.length} characters: delete the token file and restart the dashboard`);
  }
  return Buffer.from(t, 'hex');
}

function hmac(token: string, message: string): string {
  return createHmac('sha256', tokenKey(token)).update(message, 'utf8').digest('hex');
}

/** HMAC(token, "onthefly-trainer:" + D + ":" + T), hex. */
export function trainerProof(token: string, dashboardNonce: string, trainerNonce: string): string {
  return hmac(token, `${TRAINER_PREFIX}${dashboardNonce}:${trainerNonce}`);
}

/** HMAC(token, "onthefly-dashboard:" + T + ":" + D), hex. */
export function dashboardProof(token: string, trainerNonce: string, dashboardNonce: string): string {
  return hmac(token, `${DASHBOARD_PREFIX}${trainerNonce}:${dashboardNonce}`);
}

/** Compare proofs in constant time; anything but a 64-hex-digit string never matches. */
export function proofMatches(expected: string, given: unknown): boolean {
  if (typeof given !== 'string' || !PROOF_RE.test(given)) return false;
  return timingSafeEqual(Buffer.from(expected, 'hex'), Buffer.from(given, 'hex'));
}

export function dashboardHello(nonce: string, protocol: number = PROTOCOL_VERSION): Notification {
  return { kind: 'notification', method: HELLO, params: { protocol, nonce } };
}

export function trainerHello(nonce: string, proof: string, client: ClientInfo, protocol: number = PROTOCOL_VERSION): Notification {
  return { kind: 'notification', method: HELLO, params: { protocol, nonce, proof, client } };
}

export function welcome(proof: string): Notification {
  return { kind: 'notification', method: WELCOME, params: { proof } };
}

function paramsOf(m: Message, method: string, who: string): Record<string, unknown> {
  if (m.kind !== 'notification' || m.method !== method || Array.isArray(m.params)) {
    throw new HandshakeError(`expected the ${who} notification '${method}', got ${m.kind} ${'method' in m ? `'${m.method}'` : ''}`, 'bad-message');
  }
  return m.params;
}

export interface TrainerHello {
  protocol: number;
  nonce: string;
  proof: string;
  client: ClientInfo;
}

/**
 * Step 2 as the dashboard reads it. The version is returned, not checked, so
 * the caller can name both versions in its message.
 *
 * @throws HandshakeError reason `bad-message`.
 */
export function parseTrainerHello(m: Message): TrainerHello {
  const p = paramsOf(m, HELLO, "training process's");
  if (!Number.isInteger(p.protocol)) {
    throw new HandshakeError(`the training process's hello has no integer 'protocol': got ${JSON.stringify(p.protocol)}`, 'bad-message');
  }
  if (typeof p.nonce !== 'string' || !NONCE_RE.test(p.nonce)) {
    throw new HandshakeError("the training process's nonce must be 32 lowercase hex digits", 'bad-message');
  }
  if (typeof p.proof !== 'string' || !PROOF_RE.test(p.proof)) {
    throw new HandshakeError("the training process's proof must be 64 lowercase hex digits", 'bad-message');
  }
  const client = p.client as Record<string, unknown> | undefined;
  if (!client || typeof client !== 'object' || Array.isArray(client)) {
    throw new HandshakeError("the training process's hello has no 'client' object", 'bad-message');
  }
  if (typeof client.session !== 'string' || !client.session) {
    throw new HandshakeError("the training process's client has no 'session' id", 'bad-message');
  }
  return { protocol: p.protocol as number, nonce: p.nonce, proof: p.proof, client: client as ClientInfo };
}

/** Step 1 as a training process reads it: `[protocol, nonce]`. @throws HandshakeError */
export function parseDashboardHello(m: Message): [number, string] {
  const p = paramsOf(m, HELLO, "dashboard's");
  if (!Number.isInteger(p.protocol) || typeof p.nonce !== 'string' || !NONCE_RE.test(p.nonce)) {
    throw new HandshakeError("the dashboard's hello needs an integer 'protocol' and a 32-hex-digit 'nonce'", 'bad-message');
  }
  return [p.protocol as number, p.nonce];
}

/** Step 3 as a training process reads it: the dashboard's proof. @throws HandshakeError */
export function parseWelcome(m: Message): unknown {
  return paramsOf(m, WELCOME, "dashboard's").proof;
}
