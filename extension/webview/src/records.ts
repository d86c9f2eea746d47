/**
 * The records the dashboard holds, from the rows it reads back out of the
 * store on (re)connection: runs and their parents, epoch summaries, tests and
 * log lines, each shaped as the notification of the same record
 * (`onthefly/protocol/payloads.py` shapes those on the Python side), so live
 * events and history land in one form. Pure: no DOM.
 */
import type { LogLevel } from '../../src/protocol/spec';
import type { EpochPayload, RunParent, RunPayload, TestPayload } from '../../src/protocol/types';

/** A row of a `query` result, keyed by column. */
export type Row = Record<string, unknown>;

/** One line of the log view. */
export interface LogLine {
  level: LogLevel;
  message: string;
  step?: number | null;
  /** Seconds since the epoch. */
  time: number;
}

/** A JSON column's value: DuckDB hands JSON columns over as text. */
export function parseJson(v: unknown): unknown {
  if (typeof v !== 'string') return v;
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

export function asLevel(v: unknown): LogLevel {
  return v === 'debug' || v === 'warning' || v === 'error' ? v : 'info';
}

/** A number, or null for anything else (SQL NULL, a non-finite value sent as null). */
export function numberOrNull(v: unknown): number | null {
  return typeof v === 'number' ? v : null;
}

function numbers(v: unknown): number[] {
  const parsed = parseJson(v);
  return Array.isArray(parsed) ? parsed.map((x) => (typeof x === 'number' ? x : Number.NaN)) : [];
}

function record(v: unknown): Record<string, unknown> {
  const parsed = parseJson(v);
  return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? Object.fromEntries(Object.entries(parsed)) : {};
}

/** The last number of a column (a `steps` metric), if any. */
export function lastNumber(col: readonly unknown[] | undefined): number | undefined {
  for (let i = (col?.length ?? 0) - 1; i >= 0; i--) {
    const v = col?.[i];
    if (typeof v === 'number') return v;
  }
  return undefined;
}

/** A row of the `epochs` table as the `epoch` notification carries it. */
export function epochFromRow(r: Row): EpochPayload {
  return {
    run: String(r.run),
    split: String(r.split),
    epoch: Number(r.epoch),
    step: Number(r.step),
    count: Number(r.count),
    mean: numberOrNull(r.mean),
    min: numberOrNull(r.min),
    max: numberOrNull(r.max),
    quantiles: { p10: numberOrNull(r.p10), p50: numberOrNull(r.p50), p90: numberOrNull(r.p90), p99: numberOrNull(r.p99) },
    hist: { edges: numbers(r.hist_edges), counts: numbers(r.hist_counts) },
  };
}

/** A row of the `tests` table as the `test` notification carries it. */
export function testFromRow(t: Row): TestPayload {
  return {
    run: String(t.run),
    split: String(t.split),
    step: Number(t.step),
    epoch: Number(t.epoch),
    loss: numberOrNull(t.loss),
    metrics: record(t.metrics),
    count: Number(t.count ?? 0),
  };
}

/** The parents of each run, from the rows of `run_edges`. */
export function parentsByChild(edges: readonly Row[]): Map<string, RunParent[]> {
  const parents = new Map<string, RunParent[]>();
  for (const e of edges) {
    const child = String(e.child_id);
    parents.set(child, [...(parents.get(child) ?? []), { id: String(e.parent_id), role: e.role == null ? undefined : String(e.role) }]);
  }
  return parents;
}

/** A row of the `runs` table as the `run` notification carries it. */
export function runFromRow(r: Row, parents: Map<string, RunParent[]>): RunPayload {
  const id = String(r.id);
  return { id, name: String(r.name ?? r.id), kind: String(r.kind ?? 'base'), status: String(r.status ?? ''), parents: parents.get(id) ?? [], created_at: Number(r.created_at) };
}

/** A row of the `events` table as a log line. */
export function logFromRow(l: Row, now: number): LogLine {
  return { level: asLevel(l.level), message: String(l.message), step: numberOrNull(l.step), time: Number(l.created_at) || now };
}

/** `epochs` with `e` in the place of the summary of the same run, split and epoch (or added). */
export function upsertEpoch(epochs: readonly EpochPayload[], e: EpochPayload): EpochPayload[] {
  return epochs.filter((x) => !(x.run === e.run && x.split === e.split && x.epoch === e.epoch)).concat(e);
}
