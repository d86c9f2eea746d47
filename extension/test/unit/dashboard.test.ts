/**
 * The dashboard's logic, apart from the DOM: history rows into records,
 * the shown run and what arrives for it, the session choice, what each
 * notification does, the loss distribution drawn from the epoch summary, and
 * what the view remembers.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import type { SessionSummary } from '../../src/bridge/session';
import { decode, isTrainerNotification } from '../../src/protocol/codec';
import { NOTIFICATIONS } from '../../src/protocol/spec';
import type { EpochPayload, NotificationName, RunPayload, StepsPayload, TestPayload, TrainerNotification } from '../../src/protocol/types';
import { distributionLine, histogramBars, pickPass, quantileBands, summarizedEpochs } from '../../webview/src/distribution';
import { type NotificationSink, applyNotification, checkpointLine, errorLine, testLine } from '../../webview/src/notifications';
import { ViewPrefs, asXMode } from '../../webview/src/prefs';
import { type LogLine, epochFromRow, lastNumber, logFromRow, parentsByChild, runFromRow, testFromRow, upsertEpoch } from '../../webview/src/records';
import { SessionChoice } from '../../webview/src/sessionChoice';
import { ShownRun } from '../../webview/src/shownRun';

const FIXTURES = path.resolve(__dirname, '..', '..', '..', '..', 'tests', 'fixtures', 'protocol');

const epoch = (over: Partial<EpochPayload> = {}): EpochPayload => ({
  run: 'r1', split: 'train', epoch: 0, step: 10, count: 4, mean: 0.5,
  quantiles: { p10: 0.1, p50: 0.5, p90: 0.8, p99: 0.9 }, hist: { edges: [0, 1, 2], counts: [3, 1] }, ...over,
});
const test = (over: Partial<TestPayload> = {}): TestPayload => ({ run: 'r1', split: 'test', step: 10, epoch: 0, loss: 0.25, metrics: {}, count: 8, ...over });
const session = (over: Partial<SessionSummary> = {}): SessionSummary => ({
  id: 's', project: 'p', run: 'r1', host: 'h', pid: 1, version: '1', connected: true, readOnly: false,
  state: 'running', step: 1, epoch: 0, samplesPerS: null, connectedAt: 0, ...over,
});

/** A sink that writes down what it is told. */
class Recorder implements NotificationSink {
  calls: [string, unknown][] = [];
  live(step: number, epoch: number | undefined, samplesPerS: number | undefined) {
    this.calls.push(['live', [step, epoch, samplesPerS]]);
  }
  appendSteps(steps: StepsPayload) {
    this.calls.push(['appendSteps', steps.step]);
  }
  followRun(run: string) {
    this.calls.push(['followRun', run]);
  }
  upsertRun(run: RunPayload) {
    this.calls.push(['upsertRun', run.id]);
  }
  epochAdded(e: EpochPayload) {
    this.calls.push(['epochAdded', e]);
  }
  testAdded(t: TestPayload) {
    this.calls.push(['testAdded', t.loss]);
  }
  log(line: LogLine) {
    this.calls.push(['log', line]);
  }
  say(message: string, level: 'info' | 'error') {
    this.calls.push(['say', [message, level]]);
  }
  names() {
    return this.calls.map(([n]) => n);
  }
}

function golden(name: string): TrainerNotification {
  const m = decode(fs.readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8'));
  assert.ok(m.kind === 'notification');
  const n = { method: m.method, params: m.params };
  assert.ok(isTrainerNotification(n), `${name} fits spec.ts`);
  return n;
}

describe('the notification union', () => {
  it('has a payload type for every notification of spec.ts, and no other', () => {
    const typed: Record<NotificationName, true> = { state: true, run: true, steps: true, epoch: true, test: true, checkpoint: true, log: true, error: true };
    assert.deepEqual(Object.keys(typed).sort(), Object.keys(NOTIFICATIONS).sort());
  });
  it('admits what fits the spec and nothing else', () => {
    assert.ok(isTrainerNotification({ method: 'log', params: { level: 'info', message: 'hi' } }));
    assert.ok(!isTrainerNotification({ method: 'log', params: { level: 'loud', message: 'hi' } }));
    assert.ok(!isTrainerNotification({ method: 'epoch', params: { run: 'r' } }));
    assert.ok(!isTrainerNotification({ method: 'gossip', params: {} }));
  });
});

describe('history rows', () => {
  it('read an epoch summary as its notification, the histogram from its JSON text', () => {
    const e = epochFromRow({ run: 'r1', split: 'val', epoch: 2, step: 30, count: 64, mean: null, min: 0, max: 3, p10: 0.1, p50: null, p90: 1, p99: 2, hist_edges: '[0, 1.5, 3]', hist_counts: '[60, 4]' });
    assert.deepEqual(e, { run: 'r1', split: 'val', epoch: 2, step: 30, count: 64, mean: null, min: 0, max: 3, quantiles: { p10: 0.1, p50: null, p90: 1, p99: 2 }, hist: { edges: [0, 1.5, 3], counts: [60, 4] } });
    assert.deepEqual(epochFromRow({ run: 'r', split: 'train', epoch: 0, step: 0, count: 0, hist_edges: null, hist_counts: 'not json' }).hist, { edges: [], counts: [] });
  });
  it('read tests, runs with their parents and log lines', () => {
    assert.deepEqual(testFromRow({ run: 'r1', split: 'test', step: 5, epoch: 1, loss: 0.3, metrics: '{"accuracy": 0.9}' }), { run: 'r1', split: 'test', step: 5, epoch: 1, loss: 0.3, metrics: { accuracy: 0.9 }, count: 0 });
    const parents = parentsByChild([{ child_id: 'm', parent_id: 'a', role: 'left' }, { child_id: 'm', parent_id: 'b', role: null }]);
    assert.deepEqual(runFromRow({ id: 'm', name: null, kind: 'merge', status: 'finished', created_at: 3 }, parents), { id: 'm', name: 'm', kind: 'merge', status: 'finished', parents: [{ id: 'a', role: 'left' }, { id: 'b', role: undefined }], created_at: 3 });
    assert.deepEqual(logFromRow({ level: 'loud', message: 'x', step: null, created_at: null }, 42), { level: 'info', message: 'x', step: null, time: 42 });
  });
  it('keep one summary per run, split and epoch', () => {
    const list = upsertEpoch(upsertEpoch([epoch()], epoch({ mean: 0.4 })), epoch({ split: 'val' }));
    assert.deepEqual(list.map((e) => [e.split, e.mean]), [['train', 0.4], ['val', 0.5]]);
  });
  it('find the last number of a column', () => {
    assert.equal(lastNumber([1, 2, null, 'x']), 2);
    assert.equal(lastNumber([]), undefined);
    assert.equal(lastNumber(undefined), undefined);
  });
});

describe('the shown run', () => {
  it('follows the trainer until the user pins another run', () => {
    const shown = new ShownRun();
    assert.ok(shown.following && shown.shouldFollow('r1'));
    shown.choose('r1', false, 'r1');
    assert.ok(!shown.shouldFollow('r1') && shown.pinned === undefined);
    shown.choose('r0', true, 'r1');
    assert.equal(shown.pinned, 'r0');
    assert.ok(!shown.shouldFollow('r2'));
    shown.choose('r1', true, 'r1'); // choosing the live run follows again
    assert.ok(shown.following && shown.pinned === undefined);
    assert.ok(!new ShownRun('r0').following);
  });
  it('holds live steps back while the history is read, and drops those of another run', () => {
    const shown = new ShownRun();
    shown.choose('r1', false, 'r1');
    const steps = (step: number): StepsPayload => ({ step: [step], loss: [1] });
    const gen = shown.startRead();
    assert.equal(shown.liveSteps(steps(1), 'r1'), undefined);
    assert.equal(shown.liveSteps(steps(2), 'r2'), undefined, 'the trainer is on another run');
    assert.deepEqual(shown.finishRead(gen).map((s) => s.step), [[1]]);
    assert.deepEqual(shown.liveSteps(steps(3), 'r1')?.step, [3]);
    assert.equal(new ShownRun().liveSteps(steps(4), 'r1'), undefined, 'no run shown');
  });
  it('lets a later read replace an earlier one', () => {
    const shown = new ShownRun('r1');
    const first = shown.startRead();
    shown.liveSteps({ step: [1] }, undefined);
    const second = shown.startRead();
    assert.ok(shown.superseded(first) && !shown.superseded(second));
    assert.deepEqual(shown.finishRead(first), []);
    shown.liveSteps({ step: [2] }, undefined);
    assert.deepEqual(shown.finishRead(second).map((s) => s.step), [[2]]);
  });
  it('takes the summaries of its run and draws val and test losses over the loss chart', () => {
    const shown = new ShownRun('r1');
    assert.ok(shown.addEpoch(epoch({ step: 20, epoch: 1 })));
    assert.ok(shown.addEpoch(epoch({ step: 10 })));
    assert.ok(shown.addEpoch(epoch({ split: 'val', step: 10, mean: 0.7 })));
    assert.ok(shown.addEpoch(epoch({ split: 'val', step: 20, epoch: 1, mean: null })));
    assert.ok(!shown.addEpoch(epoch({ run: 'r2' })));
    shown.addTest(test({ step: 20, loss: 0.2 }));
    shown.addTest(test({ run: 'r2' }));
    shown.addTest(test({ loss: null }));
    assert.deepEqual(shown.overlays(), [
      { label: 'val loss', x: [10], y: [0.7] },
      { label: 'test loss', x: [20], y: [0.2] },
    ]);
    assert.deepEqual(shown.epochEnds(), [10, 20]);
  });
});

describe('the session choice', () => {
  const follows = () => false;
  it('shows the remembered session, else a connected one, else the first', () => {
    const list = [session({ id: 'a', connected: false }), session({ id: 'b' }), session({ id: 'c' })];
    assert.deepEqual(new SessionChoice().onList(list, undefined, 'c', follows), { kind: 'pick', id: 'c' });
    assert.deepEqual(new SessionChoice().onList(list, undefined, 'gone', follows), { kind: 'pick', id: 'b' });
    assert.deepEqual(new SessionChoice().onList([list[0]], 'gone', undefined, follows), { kind: 'pick', id: 'a' });
    assert.deepEqual(new SessionChoice().onList([], undefined, undefined, follows), { kind: 'none' });
  });
  it('reads a session once each time it connects, and moves to a live one when it goes', () => {
    const choice = new SessionChoice();
    assert.ok(!choice.picked('a', session({ id: 'a', connected: false })));
    assert.deepEqual(choice.onList([session({ id: 'a' })], 'a', undefined, follows).kind, 'load');
    assert.deepEqual(choice.onList([session({ id: 'a' })], 'a', undefined, follows).kind, 'none');
    assert.deepEqual(choice.onList([session({ id: 'a', connected: false }), session({ id: 'b' })], 'a', undefined, follows), { kind: 'pick', id: 'b' });
    assert.deepEqual(choice.onList([session({ id: 'a', connected: false })], 'a', undefined, follows).kind, 'none');
    assert.deepEqual(choice.onList([session({ id: 'a' })], 'a', undefined, follows).kind, 'load', 'connected again');
  });
  it('follows the trainer to its new run when the shown run follows', () => {
    const choice = new SessionChoice();
    choice.picked('a', session({ id: 'a' }));
    assert.deepEqual(choice.onList([session({ id: 'a', run: 'r2' })], 'a', undefined, (run) => run === 'r2'), { kind: 'follow', run: 'r2' });
  });
});

describe('notifications', () => {
  it('steps update the session bar and the charts of the shown run', () => {
    const shown = new ShownRun();
    shown.choose('r-base', false, 'r-base');
    const sink = new Recorder();
    applyNotification(golden('notification.steps'), shown, 'r-base', sink, 0);
    assert.deepEqual(sink.names(), ['live', 'appendSteps']);
    shown.startRead();
    applyNotification({ method: 'steps', params: { step: [9], epoch: [1] } }, shown, 'r-base', sink, 0);
    assert.deepEqual(sink.calls.at(-1), ['live', [9, 1, undefined]], 'held back while reading: the bar moves, the charts wait');
  });
  it('a state on another run moves a following dashboard along, and only then', () => {
    const sink = new Recorder();
    const shown = new ShownRun();
    shown.choose('r0', false, 'r0');
    applyNotification({ method: 'state', params: { state: 'running', step: 1, epoch: 0, run: 'r1' } }, shown, 'r1', sink, 0);
    applyNotification({ method: 'state', params: { state: 'running', step: 1, epoch: 0, run: 'r1' } }, new ShownRun('r0'), 'r1', sink, 0);
    assert.deepEqual(sink.calls, [['followRun', 'r1']]);
  });
  it('an epoch of the shown run is held and drawn with its histogram; one of another run is not', () => {
    const n = golden('notification.epoch');
    assert.ok(n.method === 'epoch');
    const shown = new ShownRun('r-base');
    const sink = new Recorder();
    applyNotification(n, shown, 'r-base', sink, 0);
    applyNotification(n, new ShownRun('r-other'), 'r-base', sink, 0);
    assert.deepEqual(sink.names(), ['epochAdded']);
    const held = pickPass(shown.epochs, 'r-base', 'train', 'latest');
    assert.deepEqual(held, n.params);
    assert.deepEqual(histogramBars(held.hist), [n.params.hist.edges.slice(0, -1), n.params.hist.counts]);
  });
  it('tests, runs, checkpoints, logs and errors reach their views', () => {
    const shown = new ShownRun('r-base');
    const sink = new Recorder();
    for (const name of ['test', 'run', 'checkpoint', 'log', 'error']) applyNotification(golden(`notification.${name}`), shown, 'r-base', sink, 7);
    assert.deepEqual(sink.names(), ['testAdded', 'upsertRun', 'log', 'log', 'log', 'say']);
    assert.equal(shown.tests.length, 1);
    const lines = sink.calls.filter(([n]) => n === 'log').map(([, l]) => l as LogLine);
    assert.ok(lines.every((l) => l.time === 7));
    const log = golden('notification.log');
    assert.ok(log.method === 'log');
    assert.deepEqual(lines.map((l) => l.level), ['info', log.params.level, 'error']);
  });
  it('are written as one line each', () => {
    assert.equal(checkpointLine({ id: 'c-1', run: 'r', step: 12, epoch: 0, path: 'checkpoints/c-1.safetensors' }), 'checkpoint c-1 saved at step 12 (checkpoints/c-1.safetensors)');
    assert.equal(errorLine({ message: 'out of memory', type: 'RuntimeError', fatal: true }), 'RuntimeError: out of memory (training stopped)');
    assert.equal(errorLine({ message: 'slow', fatal: false }), 'slow');
    assert.equal(testLine(test({ loss: 0.3125, count: 10000, metrics: { accuracy: 0.912, note: 'x' } })), 'test loss 0.3125 on 10000 samples (accuracy 0.9120, note x)');
    assert.equal(testLine(test({ loss: null, metrics: {} })), 'test loss — on 8 samples');
  });
});

describe('the loss distribution', () => {
  const epochs = [epoch(), epoch({ epoch: 2, step: 30 }), epoch({ epoch: 1, step: 20 }), epoch({ split: 'val', epoch: 3 }), epoch({ run: 'r2', epoch: 9 })];
  it('is the latest or the chosen pass of the run and split', () => {
    assert.equal(pickPass(epochs, 'r1', 'train', 'latest')?.epoch, 2);
    assert.equal(pickPass(epochs, 'r1', 'train', 1)?.step, 20);
    assert.equal(pickPass(epochs, 'r1', 'train', 5), undefined);
    assert.equal(pickPass(epochs, 'r1', 'test', 'latest'), undefined);
    assert.deepEqual(summarizedEpochs(epochs, 'train'), [0, 1, 2, 9]);
  });
  it('draws bars at the left edge of each bin, and none for a histogram that does not add up', () => {
    assert.deepEqual(histogramBars({ edges: [0, 1, 2], counts: [3, 1] }), [[0, 1], [3, 1]]);
    assert.deepEqual(histogramBars({ edges: [], counts: [] }), [[], []]);
    assert.deepEqual(histogramBars({ edges: [0, 1], counts: [3, 1] }), [[], []]);
  });
  it('gives the quantile bands over epochs, gaps as null', () => {
    const bands = quantileBands([epoch({ epoch: 1, quantiles: { p10: 1, p50: 2, p90: 3, p99: null } }), epoch()], 'train');
    assert.deepEqual(bands, [[0, 1], [0.1, 1], [0.5, 2], [0.8, 3], [0.9, null]]);
  });
  it('is summed up in a line', () => {
    assert.equal(distributionLine(epoch({ epoch: 3, count: 60000, mean: 0.41, quantiles: { p50: 0.12, p99: 4.75 } })), `epoch 3 · ${(60000).toLocaleString()} samples · mean 0.4100 · p50 0.1200 · p99 4.750`);
  });
});

describe('what the view remembers', () => {
  it('keeps each change with the host and starts from what it kept', () => {
    let kept: unknown = { tab: 'runs' };
    const store = { getState: <T>() => kept as T, setState: <T>(s: T) => void (kept = s) };
    const prefs = new ViewPrefs(store);
    prefs.set({ session: 's1' });
    prefs.set({ run: undefined, xMode: 'epoch' });
    assert.deepEqual(kept, { tab: 'runs', session: 's1', run: undefined, xMode: 'epoch' });
    assert.equal(new ViewPrefs(store).saved.session, 's1');
    assert.equal(new ViewPrefs({ getState: () => undefined, setState: () => {} }).saved.tab, undefined);
    assert.equal(asXMode('epoch'), 'epoch');
    assert.equal(asXMode('minutes'), 'step');
  });
});
