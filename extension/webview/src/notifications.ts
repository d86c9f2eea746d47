/**
 * What each notification of the shown session does to the dashboard. The
 * notification is the protocol's discriminated union (`switch` on `method`
 * narrows `params`); the decisions (which run, draw now or wait for the
 * history, follow the trainer) are taken here against the {@link ShownRun},
 * and the views are told through a {@link NotificationSink}. Pure: no DOM.
 */
import type { CheckpointPayload, EpochPayload, ErrorPayload, RunPayload, StepsPayload, TestPayload, TrainerNotification } from '../../src/protocol/types';
import { fmt } from './format';
import { type LogLine, lastNumber } from './records';
import type { ShownRun } from './shownRun';

/** What the views of the dashboard are told. */
export interface NotificationSink {
  /** The latest step (and epoch, samples/s) of the session, for the session bar. */
  live(step: number, epoch: number | undefined, samplesPerS: number | undefined): void;
  /** Step metrics of the shown run to draw. */
  appendSteps(steps: StepsPayload): void;
  /** Show this run (the trainer moved to it and the dashboard follows). */
  followRun(run: string): void;
  upsertRun(run: RunPayload): void;
  /** A pass of the shown run finished (already held by the ShownRun). */
  epochAdded(e: EpochPayload): void;
  /** A test finished (already held by the ShownRun). */
  testAdded(t: TestPayload): void;
  log(line: LogLine): void;
  say(message: string, level: 'info' | 'error'): void;
}

/**
 * Apply one notification of the shown session.
 *
 * @param liveRun the run the session's trainer is on, as its summary says.
 * @param now seconds since the epoch, the time of log lines.
 */
export function applyNotification(n: TrainerNotification, shown: ShownRun, liveRun: string | undefined, sink: NotificationSink, now: number): void {
  switch (n.method) {
    case 'steps': {
      const steps = n.params;
      const last = steps.step.length - 1;
      if (last >= 0) sink.live(steps.step[last], lastNumber(steps.epoch), lastNumber(steps.samples_per_s));
      const draw = shown.liveSteps(steps, liveRun);
      if (draw) sink.appendSteps(draw);
      return;
    }
    case 'state':
      if (shown.shouldFollow(n.params.run)) sink.followRun(n.params.run);
      return;
    case 'run':
      sink.upsertRun(n.params);
      return;
    case 'epoch':
      if (shown.addEpoch(n.params)) sink.epochAdded(n.params);
      return;
    case 'test':
      shown.addTest(n.params);
      sink.testAdded(n.params);
      return;
    case 'checkpoint':
      sink.log({ level: 'info', message: checkpointLine(n.params), step: n.params.step, time: now });
      return;
    case 'log':
      sink.log({ level: n.params.level, message: n.params.message, step: n.params.step ?? null, time: now });
      return;
    case 'error':
      sink.log({ level: 'error', message: errorLine(n.params), time: now });
      sink.say(n.params.message, 'error');
      return;
  }
}

export function checkpointLine(c: CheckpointPayload): string {
  return `checkpoint ${c.id} saved at step ${c.step} (${c.path})`;
}

export function errorLine(e: ErrorPayload): string {
  return `${e.type ? `${e.type}: ` : ''}${e.message}${e.fatal ? ' (training stopped)' : ''}`;
}

/** A test result in one line: `test loss 0.3125 on 10000 samples (accuracy 0.9120)`. */
export function testLine(t: Pick<TestPayload, 'split' | 'loss' | 'count' | 'metrics'>): string {
  const metrics = Object.entries(t.metrics ?? {})
    .map(([k, v]) => `${k} ${typeof v === 'number' ? fmt(v) : String(v)}`)
    .join(', ');
  return `${t.split} loss ${fmt(t.loss)} on ${t.count} samples${metrics ? ` (${metrics})` : ''}`;
}
