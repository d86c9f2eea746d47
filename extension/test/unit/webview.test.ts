import * as assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SessionSummary } from '../../src/bridge/session';
import { controlStates } from '../../webview/src/controls';
import { fmt } from '../../webview/src/format';
import { layoutLineage } from '../../webview/src/lineage';
import { StepTable, countInRange, extremeIndices, mergePoints, stepsToEpochs, toCsv } from '../../webview/src/series';

const session = (over: Partial<SessionSummary> = {}): SessionSummary => ({
  id: 's', project: 'p', run: 'r', host: 'h', pid: 1, version: '1', connected: true, readOnly: false,
  state: 'running', step: 1, epoch: 0, samplesPerS: null, connectedAt: 0, ...over,
});

describe('downsampling keeps extremes', () => {
  it('keeps every point when they fit', () => {
    const x = Float64Array.from({ length: 100 }, (_, i) => i);
    assert.equal(extremeIndices(x, x, 0, 100, 50).length, 100);
  });
  it('keeps each bucket\'s min and max, so a one-step spike survives a million steps', () => {
    const n = 1_000_000;
    const x = new Float64Array(n);
    const y = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      x[i] = i;
      y[i] = 1 + Math.sin(i / 1000) * 0.1;
    }
    y[123_457] = 50; // a spike
    y[765_432] = -3; // a dip
    y[999] = Number.NaN; // a gap
    const idx = extremeIndices(x, y, 0, n, 1000);
    assert.ok(idx.length <= 4000 && idx.length >= 1000, `about 2-4 points per bucket, got ${idx.length}`);
    const ys = Array.from(idx, (i) => y[i]);
    assert.ok(ys.includes(50) && ys.includes(-3));
    assert.equal(idx[0], 0);
    assert.equal(idx[idx.length - 1], n - 1);
    for (let i = 1; i < idx.length; i++) assert.ok(idx[i] > idx[i - 1], 'ascending, no duplicates');
  });
  it('works on a window of the data', () => {
    const x = Float64Array.from({ length: 10_000 }, (_, i) => i);
    const idx = extremeIndices(x, x, 2000, 3000, 10);
    assert.equal(idx[0], 2000);
    assert.equal(idx[idx.length - 1], 2999);
  });
});

describe('StepTable', () => {
  it('appends columnar steps and skips rows it already holds', () => {
    const t = new StepTable(['loss']);
    assert.equal(t.append({ step: [1, 2, 3], loss: [0.5, null, 0.3] }), 3);
    assert.equal(t.append({ step: [2, 3, 4], loss: [9, 9, 0.2] }), 1);
    assert.deepEqual(Array.from(t.get('step')), [1, 2, 3, 4]);
    assert.ok(Number.isNaN(t.get('loss')[1]));
    assert.equal(t.get('loss')[3], 0.2);
    assert.equal(t.get('nope').length, 0);
  });
  it('grows past its first capacity', () => {
    const t = new StepTable(['loss']);
    const step = Array.from({ length: 5000 }, (_, i) => i);
    t.append({ step, loss: step.map((s) => s / 10) });
    assert.equal(t.length, 5000);
    assert.equal(t.get('loss')[4999], 499.9);
  });
});

it('merges validation points into the step axis', () => {
  const [x, train, val] = mergePoints([1, 2, 4], [[0.9, 0.8, 0.7]], [{ x: [3, 4], y: [0.75, 0.72] }]);
  assert.deepEqual(x, [1, 2, 3, 4]);
  assert.deepEqual(train, [0.9, 0.8, null, 0.7]);
  assert.deepEqual(val, [null, null, 0.75, 0.72]);
});

it('turns steps into fractional epochs', () => {
  assert.deepEqual(Array.from(stepsToEpochs([0, 5, 10, 15, 20, 25], [10, 20])), [0, 0.5, 1, 1.5, 2, 2.5]);
});

it('counts samples of a loss range from a histogram', () => {
  assert.equal(countInRange([0, 1, 2, 3], [10, 20, 30], 1, 3), 50);
  assert.equal(countInRange([0, 1, 2, 3], [10, 20, 30], 0.5, 1.5), 15);
  assert.equal(countInRange([0, 1, 2, 3], [10, 20, 30], 5, 6), 0);
});

it('writes CSV with empty cells for gaps', () => {
  assert.equal(toCsv(['step', 'loss'], [[1, 2], [0.5, Number.NaN]]), 'step,loss\n1,0.5\n2,\n');
});

it('formats numbers for people', () => {
  assert.equal(fmt(0.123456), '0.1235');
  assert.equal(fmt(null), '—');
  assert.equal(fmt(1e-5), '1.000e-5');
});

describe('controls', () => {
  it('disable everything but load when no session is connected, and say why', () => {
    const c = controlStates(undefined);
    assert.equal(c.pause.enabled, false);
    assert.match(c.pause.title, /No training process is connected/);
    assert.equal(c['load-session'].enabled, true);
  });
  it('follow the run state', () => {
    const running = controlStates(session());
    assert.deepEqual([running.pause.enabled, running.resume.enabled, running.stop.enabled, running.test.enabled], [true, false, true, true]);
    assert.equal(running.resume.title, 'Already running');
    const paused = controlStates(session({ state: 'paused' }));
    assert.deepEqual([paused.pause.enabled, paused.resume.enabled], [false, true]);
    const testing = controlStates(session({ state: 'testing' }));
    assert.match(testing.test.title, /A test is running/);
    const finished = controlStates(session({ state: 'finished' }));
    assert.deepEqual([finished.stop.enabled, finished.resume.enabled], [false, true]);
  });
  it('keep loaded sessions read-only and disconnected ones idle', () => {
    assert.match(controlStates(session({ readOnly: true })).pause.title, /read-only/);
    const gone = controlStates(session({ connected: false }));
    assert.equal(gone.test.enabled, false);
    assert.equal(gone['export-session'].enabled, true, 'an export reads the store');
  });
  it('disable a control while it runs', () => {
    assert.match(controlStates(session(), new Set(['test'])).test.title, /in progress/);
  });
});

it('lays out lineage with merges: parents above their children', () => {
  const run = (id: string, parents: string[]) => ({ id, name: id, kind: parents.length > 1 ? 'merge' : parents.length ? 'fork' : 'base', status: 'finished', parents: parents.map((p) => ({ id: p })) });
  const { nodes, edges } = layoutLineage([run('a', []), run('b', ['a']), run('c', ['a']), run('m', ['b', 'c'])]);
  const y = Object.fromEntries(nodes.map((n) => [n.id, n.y]));
  assert.ok(y.a < y.b && y.b < y.m && y.c < y.m);
  assert.equal(edges.length, 4);
  assert.ok(edges.every((e) => e.points.length >= 2));
});

it('replaces a range of downsampled rows with full detail', () => {
  const t = new StepTable(['loss']);
  t.append({ step: [0, 100, 200, 300, 400], loss: [5, 4, 3, 2, 1] });
  const d = t.withDetail(100, 300, { step: [100, 150, 200, 250, 300], loss: [4, 3.5, 3, 2.5, 2] });
  assert.deepEqual(Array.from(d.get('step')), [0, 100, 150, 200, 250, 300, 400]);
  assert.deepEqual(Array.from(d.get('loss')), [5, 4, 3.5, 3, 2.5, 2, 1]);
  assert.equal(t.length, 5, 'the original table is left as it was');
});
