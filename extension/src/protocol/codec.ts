/**
 * JSON-RPC 2.0 messages of the dashboard link, their decoding and checks.
 *
 * Mirrors `onthefly/protocol/codec.py` (`encode`, `decode`, `check_fields`, `validate_params`).
 * Pure functions: used by the host core and by the webview alike.
 */
import { ERROR_CODES, METHODS, NOTIFICATIONS, type Field } from './spec';
import type { TrainerNotification } from './types';

export type Id = number | string;
export type Params = Record<string, unknown> | unknown[];

export interface Request {
  readonly kind: 'request';
  readonly id: Id;
  readonly method: string;
  readonly params: Params;
}
export interface Notification {
  readonly kind: 'notification';
  readonly method: string;
  readonly params: Params;
}
export interface Response {
  readonly kind: 'response';
  readonly id: Id;
  readonly result: unknown;
}
export interface ErrorResponse {
  readonly kind: 'error';
  readonly id: Id | null;
  readonly code: number;
  readonly message: string;
  readonly data?: unknown;
}
export type Message = Request | Notification | Response | ErrorResponse;

/** A line that breaks the protocol; `code` is the JSON-RPC code to answer with. */
export class MessageError extends Error {
  constructor(
    message: string,
    readonly code: number,
    readonly id: Id | null = null,
  ) {
    super(message);
    this.name = 'MessageError';
  }
}

/** The wire form of a message, as a plain JSON object. */
export function toJson(m: Message): Record<string, unknown> {
  switch (m.kind) {
    case 'request':
      return { jsonrpc: '2.0', id: m.id, method: m.method, params: m.params };
    case 'notification':
      return { jsonrpc: '2.0', method: m.method, params: m.params };
    case 'response':
      return { jsonrpc: '2.0', id: m.id, result: m.result };
    case 'error': {
      const error: Record<string, unknown> = { code: m.code, message: m.message };
      if (m.data !== undefined && m.data !== null) error.data = m.data;
      return { jsonrpc: '2.0', id: m.id, error };
    }
  }
}

/** One message as a line of JSON, newline included. Non-finite numbers become null. */
export function encode(m: Message): string {
  return JSON.stringify(toJson(m), (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v)) + '\n';
}

const validId = (v: unknown): v is Id => typeof v === 'string' || (typeof v === 'number' && Number.isInteger(v));

/**
 * Parse one line (without its newline) into a message.
 *
 * @throws MessageError with code parse_error when the line is not JSON,
 *   invalid_request when it is JSON but no JSON-RPC 2.0 message (batches included).
 */
export function decode(line: string): Message {
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch (e) {
    throw new MessageError(
      `the line is not JSON (${(e as Error).message}): send one JSON-RPC 2.0 object per line`,
      ERROR_CODES.parse_error,
    );
  }
  if (Array.isArray(obj)) {
    throw new MessageError('batches are not supported: send one message per line', ERROR_CODES.invalid_request);
  }
  if (obj === null || typeof obj !== 'object') {
    throw new MessageError(
      `a message must be a JSON object, got ${obj === null ? 'null' : typeof obj}: send a JSON-RPC 2.0 object`,
      ERROR_CODES.invalid_request,
    );
  }
  const o = obj as Record<string, unknown>;
  const replyId = validId(o.id) ? o.id : null;
  if (o.jsonrpc !== '2.0') {
    throw new MessageError(
      `"jsonrpc" is ${JSON.stringify(o.jsonrpc)}: every message carries "jsonrpc": "2.0"`,
      ERROR_CODES.invalid_request,
      replyId,
    );
  }
  if ('method' in o) {
    if (typeof o.method !== 'string') {
      throw new MessageError('"method" must be a string', ERROR_CODES.invalid_request, replyId);
    }
    const params = o.params ?? {};
    if (typeof params !== 'object') {
      throw new MessageError(`"params" must be an object, got ${typeof params}`, ERROR_CODES.invalid_request, replyId);
    }
    if (!('id' in o)) return { kind: 'notification', method: o.method, params: params as Params };
    if (replyId === null) {
      throw new MessageError('"id" must be a string or an integer', ERROR_CODES.invalid_request);
    }
    return { kind: 'request', id: replyId, method: o.method, params: params as Params };
  }
  if ('result' in o || 'error' in o) {
    if ('result' in o && 'error' in o) {
      throw new MessageError('a reply holds "result" or "error", not both', ERROR_CODES.invalid_request, replyId);
    }
    if (!('error' in o)) {
      if (replyId === null) throw new MessageError('a result needs a string or integer "id"', ERROR_CODES.invalid_request);
      return { kind: 'response', id: replyId, result: o.result };
    }
    const err = o.error as Record<string, unknown> | null;
    if (!err || typeof err !== 'object' || !Number.isInteger(err.code) || typeof err.message !== 'string') {
      throw new MessageError('"error" must be {code: integer, message: string}', ERROR_CODES.invalid_request, replyId);
    }
    return { kind: 'error', id: replyId, code: err.code as number, message: err.message, data: err.data };
  }
  throw new MessageError(
    'the message has neither "method" nor "result"/"error": it is no JSON-RPC 2.0 message',
    ERROR_CODES.invalid_request,
    replyId,
  );
}

function isKind(value: unknown, kind: string): boolean {
  return kind.split('|').some((k) => {
    switch (k) {
      case 'null':
        return value === null;
      case 'string':
        return typeof value === 'string';
      case 'boolean':
        return typeof value === 'boolean';
      case 'integer':
        return typeof value === 'number' && Number.isInteger(value);
      case 'number':
        return typeof value === 'number' && Number.isFinite(value);
      case 'object':
        return value !== null && typeof value === 'object' && !Array.isArray(value);
      case 'array':
        return Array.isArray(value);
      case 'integer[]':
        return Array.isArray(value) && value.every((v) => typeof v === 'number' && Number.isInteger(v));
      default:
        return false;
    }
  });
}

function fieldProblem(f: Field, value: unknown): string | null {
  if (!isKind(value, f.kind)) return `'${f.name}' must be ${f.kind}, got ${String(JSON.stringify(value)).slice(0, 80)}`;
  if (f.choices.length && !f.choices.includes(value)) return `'${f.name}' must be one of ${f.choices.join(', ')}, got ${String(value)}`;
  if (f.minimum !== null && typeof value === 'number' && value < f.minimum) return `'${f.name}' must be at least ${f.minimum}`;
  if (f.maximum !== null && typeof value === 'number' && value > f.maximum) return `'${f.name}' must be at most ${f.maximum}`;
  return null;
}

/** The problems of a payload against its fields (empty when it fits); see codec.py `check_fields`. */
export function checkFields(fields: readonly Field[], payload: unknown, columnar = false): string[] {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    return [`expected an object, got ${Array.isArray(payload) ? 'array' : payload === null ? 'null' : typeof payload}`];
  }
  const p = payload as Record<string, unknown>;
  const problems: string[] = [];
  for (const f of fields) {
    if (!(f.name in p)) {
      if (f.required) problems.push(`missing '${f.name}'`);
      continue;
    }
    const problem = fieldProblem(f, p[f.name]);
    if (problem) problems.push(problem);
  }
  if (columnar) {
    const lengths = new Set<number>();
    for (const [k, v] of Object.entries(p)) {
      if (!Array.isArray(v)) problems.push(`'${k}' must be an array`);
      else lengths.add(v.length);
    }
    if (lengths.size > 1) problems.push(`columns differ in length: ${[...lengths].join(', ')}`);
  }
  return problems;
}

/** The problems of a notification's payload; an unknown notification is one problem. */
export function checkNotification(method: string, params: unknown): string[] {
  const spec = NOTIFICATIONS[method];
  if (!spec) return [`unknown notification '${method}'`];
  return checkFields(spec.fields, params, spec.columnar);
}

/**
 * Whether a notification fits spec.ts: the check each notification passes at
 * the connection, after which it is one of {@link TrainerNotification}.
 */
export function isTrainerNotification(n: { method: string; params: unknown }): n is TrainerNotification {
  return checkNotification(n.method, n.params).length === 0;
}

/** The problems of a method's result. */
export function checkResult(method: string, result: unknown): string[] {
  const spec = METHODS[method];
  if (!spec) return [`unknown method '${method}'`];
  return checkFields(spec.result, result);
}
