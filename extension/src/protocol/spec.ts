/**
 * The dashboard link protocol: version, limits, error codes, methods and
 * notifications.
 *
 * This file mirrors `onthefly/protocol/spec.py` (the Python source of truth) and
 * `docs/protocol.md`; how messages are read and checked is codec.ts. {@link listing} builds the same canonical listing as
 * Python's `listing()`, so `fingerprint()` (see fingerprint.ts) yields the same
 * sha256 and a test fails when the two sides drift apart.
 *
 * Pure data and functions: no Node or browser API, so the webview imports it too.
 */

export const PROTOCOL_VERSION = 1;
export const HOST = '127.0.0.1';
export const DEFAULT_PORT = 47621;
export const PORT_ENV = 'ONTHEFLY_DASHBOARD_PORT';
export const TOKEN_ENV = 'ONTHEFLY_TOKEN';
/** A longer line closes the connection. */
export const MAX_LINE_BYTES = 16 * 1024 * 1024;

export const HELLO = 'hello';
export const WELCOME = 'welcome';

export const ERROR_CODES = {
  parse_error: -32700,
  invalid_request: -32600,
  method_not_found: -32601,
  invalid_params: -32602,
  internal_error: -32603,
  operation_failed: -32000,
  query_failed: -32001,
  store_failed: -32002,
  bad_argument: -32003,
  training_failed: -32004,
  busy: -32005,
  result_too_large: -32006,
} as const;

export type ErrorName = keyof typeof ERROR_CODES;

/** One named member of params, a result or a notification payload (see spec.py `Field`). */
export interface Field {
  readonly name: string;
  /** A JSON type name, `integer[]`, or several joined by `|`. */
  readonly kind: string;
  readonly required: boolean;
  readonly default: unknown;
  readonly choices: readonly unknown[];
  readonly minimum: number | null;
  readonly maximum: number | null;
}

export interface MethodSpec {
  readonly name: string;
  readonly params: readonly Field[];
  readonly result: readonly Field[];
  /** Answered at the next batch boundary on the training thread. */
  readonly trainingThread: boolean;
}

export interface NotificationSpec {
  readonly name: string;
  readonly fields: readonly Field[];
  /** Besides the listed fields, any number of other arrays, all of one length. */
  readonly columnar: boolean;
}

interface FieldOptions {
  default?: unknown;
  choices?: readonly unknown[];
  minimum?: number;
  maximum?: number;
}

function field(name: string, kind: string, required: boolean, o: FieldOptions = {}): Field {
  return {
    name,
    kind,
    required,
    default: o.default ?? null,
    choices: o.choices ?? [],
    minimum: o.minimum ?? null,
    maximum: o.maximum ?? null,
  };
}
const req = (name: string, kind: string, o?: FieldOptions): Field => field(name, kind, true, o);
const opt = (name: string, kind: string, o?: FieldOptions): Field => field(name, kind, false, o);

export const STATES = ['idle', 'running', 'paused', 'testing', 'finished'] as const;
export type RunState = (typeof STATES)[number];
export const LOG_LEVELS = ['debug', 'info', 'warning', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const STATE = req('state', 'string', { choices: STATES });

export const HANDSHAKE: Readonly<Record<string, readonly Field[]>> = {
  'hello (dashboard)': [req('protocol', 'integer'), req('nonce', 'string')],
  'hello (trainer)': [
    req('protocol', 'integer'),
    req('nonce', 'string'),
    req('proof', 'string'),
    req('client', 'object'),
  ],
  welcome: [req('proof', 'string')],
};

const methodList: MethodSpec[] = [
  {
    name: 'status',
    params: [],
    result: [
      STATE,
      req('step', 'integer'),
      req('epoch', 'integer'),
      req('session', 'string'),
      req('run', 'string|null'),
      req('project', 'string'),
      req('pid', 'integer'),
      opt('samples_per_s', 'number|null'),
    ],
    trainingThread: false,
  },
  { name: 'pause', params: [], result: [STATE], trainingThread: false },
  { name: 'resume', params: [opt('epochs', 'integer', { minimum: 1 })], result: [STATE], trainingThread: false },
  { name: 'stop', params: [], result: [STATE], trainingThread: false },
  {
    name: 'test',
    params: [opt('split', 'string', { default: 'test' })],
    result: [req('split', 'string'), req('loss', 'number|null'), req('metrics', 'object'), req('count', 'integer')],
    trainingThread: true,
  },
  {
    name: 'checkpoint',
    params: [],
    result: [req('id', 'string'), req('step', 'integer'), req('epoch', 'integer'), req('path', 'string')],
    trainingThread: true,
  },
  {
    name: 'query',
    params: [
      req('sql', 'string'),
      opt('params', 'array|object'),
      opt('limit', 'integer', { default: 10000, minimum: 1, maximum: 1_000_000 }),
      opt('format', 'string', { default: 'rows', choices: ['rows', 'arrow'] }),
    ],
    result: [
      opt('columns', 'array'),
      opt('types', 'array'),
      opt('rows', 'array'),
      opt('arrow', 'string'),
      req('truncated', 'boolean'),
    ],
    trainingThread: false,
  },
  {
    name: 'report',
    params: [
      opt('run', 'string'),
      opt('split', 'string', { default: 'train' }),
      opt('epoch', 'integer', { minimum: 0 }),
      opt('k', 'integer', { default: 20, minimum: 0, maximum: 10000 }),
    ],
    result: [
      req('run', 'string'),
      req('split', 'string'),
      req('epoch', 'integer'),
      req('step', 'integer'),
      req('count', 'integer'),
      req('mean', 'number|null'),
      req('quantiles', 'object'),
      req('hist', 'object'),
      req('hardest', 'array'),
    ],
    trainingThread: false,
  },
  {
    name: 'slice',
    params: [
      req('name', 'string'),
      opt('run', 'string'),
      opt('split', 'string', { default: 'train' }),
      opt('epoch', 'integer', { minimum: 0 }),
      opt('loss_min', 'number'),
      opt('loss_max', 'number'),
      opt('q_min', 'number', { minimum: 0, maximum: 1 }),
      opt('q_max', 'number', { minimum: 0, maximum: 1 }),
      opt('ids', 'integer[]'),
      opt('replace', 'boolean'),
    ],
    result: [
      req('name', 'string'),
      req('count', 'integer'),
      req('run', 'string'),
      req('split', 'string'),
      req('epoch', 'integer'),
      req('method', 'object'),
    ],
    trainingThread: false,
  },
  {
    name: 'export_slice',
    params: [req('name', 'string'), req('path', 'string'), opt('format', 'string', { default: 'csv', choices: ['csv', 'parquet', 'json'] })],
    result: [req('path', 'string'), req('rows', 'integer'), req('bytes', 'integer')],
    trainingThread: false,
  },
  {
    name: 'export',
    params: [req('path', 'string')],
    result: [req('path', 'string'), req('bytes', 'integer'), req('session', 'string'), req('runs', 'integer'), req('files', 'integer')],
    trainingThread: true,
  },
];

const notificationList: NotificationSpec[] = [
  {
    name: 'state',
    fields: [STATE, req('step', 'integer'), req('epoch', 'integer'), opt('run', 'string|null'), opt('samples_per_s', 'number|null')],
    columnar: false,
  },
  {
    name: 'run',
    fields: [
      req('id', 'string'),
      req('name', 'string'),
      req('kind', 'string'),
      req('status', 'string'),
      req('parents', 'array'),
      opt('created_at', 'number'),
      opt('config', 'object|null'),
      opt('hparams', 'object|null'),
    ],
    columnar: false,
  },
  { name: 'steps', fields: [req('step', 'integer[]')], columnar: true },
  {
    name: 'epoch',
    fields: [
      req('run', 'string'),
      req('split', 'string'),
      req('epoch', 'integer'),
      req('step', 'integer'),
      req('count', 'integer'),
      req('mean', 'number|null'),
      opt('min', 'number|null'),
      opt('max', 'number|null'),
      req('quantiles', 'object'),
      req('hist', 'object'),
      opt('metrics', 'object|null'),
    ],
    columnar: false,
  },
  {
    name: 'test',
    fields: [
      req('run', 'string'),
      req('split', 'string'),
      req('step', 'integer'),
      req('epoch', 'integer'),
      req('loss', 'number|null'),
      req('metrics', 'object'),
      req('count', 'integer'),
    ],
    columnar: false,
  },
  {
    name: 'checkpoint',
    fields: [req('id', 'string'), req('run', 'string'), req('step', 'integer'), req('epoch', 'integer'), req('path', 'string')],
    columnar: false,
  },
  {
    name: 'log',
    fields: [req('level', 'string', { choices: LOG_LEVELS }), req('message', 'string'), opt('step', 'integer|null')],
    columnar: false,
  },
  { name: 'error', fields: [req('message', 'string'), opt('type', 'string'), req('fatal', 'boolean')], columnar: false },
];

export const METHODS: Readonly<Record<string, MethodSpec>> = Object.fromEntries(methodList.map((m) => [m.name, m]));
export const NOTIFICATIONS: Readonly<Record<string, NotificationSpec>> = Object.fromEntries(
  notificationList.map((n) => [n.name, n]),
);

function fieldSpec(f: Field): Record<string, unknown> {
  return {
    name: f.name,
    kind: f.kind,
    required: f.required,
    default: f.default,
    choices: [...f.choices],
    minimum: f.minimum,
    maximum: f.maximum,
  };
}

/** Everything a client must agree on, without prose: the same object as Python's `listing()`. */
export function listing(): Record<string, unknown> {
  return {
    version: PROTOCOL_VERSION,
    transport: {
      host: HOST,
      default_port: DEFAULT_PORT,
      port_env: PORT_ENV,
      token_env: TOKEN_ENV,
      max_line_bytes: MAX_LINE_BYTES,
    },
    handshake: Object.fromEntries(Object.entries(HANDSHAKE).map(([k, fs]) => [k, fs.map(fieldSpec)])),
    methods: Object.fromEntries(
      methodList.map((m) => [
        m.name,
        { params: m.params.map(fieldSpec), result: m.result.map(fieldSpec), training_thread: m.trainingThread },
      ]),
    ),
    notifications: Object.fromEntries(
      notificationList.map((n) => [n.name, { fields: n.fields.map(fieldSpec), columnar: n.columnar }]),
    ),
    errors: { ...ERROR_CODES },
  };
}

/**
 * JSON with keys sorted at every level and no spaces: Python's
 * `json.dumps(obj, sort_keys=True, separators=(",", ":"))` for ASCII data.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}
