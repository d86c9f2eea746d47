/**
 * TypeScript shapes of the link's payloads, as listed in spec.ts and
 * `onthefly/protocol/spec.py`: the params and results of each method and the
 * payload of each notification (built on the Python side by
 * `onthefly/protocol/payloads.py`, one function per record).
 */
import type { LogLevel, RunState } from './spec';

/** Who a training process is, from its hello. */
export interface ClientInfo {
  version?: string;
  pid?: number;
  session: string;
  project?: string;
  run?: string | null;
  host?: string;
  [key: string]: unknown;
}

export interface StatePayload {
  state: RunState;
  step: number;
  epoch: number;
  run?: string | null;
  samples_per_s?: number | null;
}
export interface RunParent {
  id: string;
  role?: string;
}
export interface RunPayload {
  id: string;
  name: string;
  kind: string;
  status: string;
  parents: RunParent[];
  created_at?: number;
  config?: Record<string, unknown> | null;
  hparams?: Record<string, unknown> | null;
}
/** Columnar step metrics: `step` plus any number of metric arrays of the same length. */
export interface StepsPayload {
  step: number[];
  [metric: string]: (number | string | null)[];
}
export interface Quantiles {
  p10?: number | null;
  p50?: number | null;
  p90?: number | null;
  p99?: number | null;
  [q: string]: number | null | undefined;
}
export interface Histogram {
  edges: number[];
  counts: number[];
}
export interface EpochPayload {
  run: string;
  split: string;
  epoch: number;
  step: number;
  count: number;
  mean: number | null;
  min?: number | null;
  max?: number | null;
  quantiles: Quantiles;
  hist: Histogram;
  metrics?: Record<string, unknown> | null;
}
export interface TestPayload {
  run: string;
  split: string;
  step: number;
  epoch: number;
  loss: number | null;
  metrics: Record<string, unknown>;
  count: number;
}
export interface CheckpointPayload {
  id: string;
  run: string;
  step: number;
  epoch: number;
  path: string;
}
export interface LogPayload {
  level: LogLevel;
  message: string;
  step?: number | null;
}
export interface ErrorPayload {
  message: string;
  type?: string;
  fatal: boolean;
}

/** Notifications from the training process, by method name. */
export interface NotificationPayloads {
  state: StatePayload;
  run: RunPayload;
  steps: StepsPayload;
  epoch: EpochPayload;
  test: TestPayload;
  checkpoint: CheckpointPayload;
  log: LogPayload;
  error: ErrorPayload;
}
export type NotificationName = keyof NotificationPayloads;
/**
 * A notification as a discriminated union on `method`, built from
 * {@link NotificationPayloads}: `switch (n.method)` narrows `n.params`.
 */
export type TrainerNotification = { [M in NotificationName]: { method: M; params: NotificationPayloads[M] } }[NotificationName];

export interface StatusResult {
  state: RunState;
  step: number;
  epoch: number;
  session: string;
  run: string | null;
  project: string;
  pid: number;
  samples_per_s?: number | null;
}
export interface StateResult {
  state: RunState;
}
export interface TestResult {
  split: string;
  loss: number | null;
  metrics: Record<string, unknown>;
  count: number;
}
export interface CheckpointResult {
  id: string;
  step: number;
  epoch: number;
  path: string;
}
export interface QueryParams {
  sql: string;
  params?: unknown[] | Record<string, unknown>;
  limit?: number;
  format?: 'rows' | 'arrow';
}
export interface QueryResult {
  columns?: string[];
  types?: string[];
  rows?: unknown[][];
  arrow?: string;
  truncated: boolean;
}
export interface ReportParams {
  run?: string;
  split?: string;
  epoch?: number;
  k?: number;
}
export interface HardSample {
  sample_id: number;
  loss: number;
  label?: number | null;
  pred?: number | null;
  [field: string]: unknown;
}
export interface ReportResult {
  run: string;
  split: string;
  epoch: number;
  step: number;
  count: number;
  mean: number | null;
  quantiles: Quantiles;
  hist: Histogram;
  hardest: HardSample[];
}
export interface SliceParams {
  name: string;
  run?: string;
  split?: string;
  epoch?: number;
  loss_min?: number;
  loss_max?: number;
  q_min?: number;
  q_max?: number;
  ids?: number[];
  replace?: boolean;
}
export interface SliceResult {
  name: string;
  count: number;
  run: string;
  split: string;
  epoch: number;
  method: Record<string, unknown>;
}
export interface ExportSliceParams {
  name: string;
  path: string;
  format?: 'csv' | 'parquet' | 'json';
}
export interface ExportSliceResult {
  path: string;
  rows: number;
  bytes: number;
}

/** Params and result of each method, by method name. */
export interface Methods {
  status: { params: Record<string, never>; result: StatusResult };
  pause: { params: Record<string, never>; result: StateResult };
  resume: { params: { epochs?: number }; result: StateResult };
  stop: { params: Record<string, never>; result: StateResult };
  test: { params: { split?: string }; result: TestResult };
  checkpoint: { params: Record<string, never>; result: CheckpointResult };
  query: { params: QueryParams; result: QueryResult };
  report: { params: ReportParams; result: ReportResult };
  slice: { params: SliceParams; result: SliceResult };
  export_slice: { params: ExportSliceParams; result: ExportSliceResult };
}
export type MethodName = keyof Methods;
