import * as assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { choosePython, lastLine } from '../../src/core/cli';
import { configRoot, resolvePort, tokenPath } from '../../src/core/paths';
import { summarize } from '../../src/core/registry';

describe('paths', () => {
  it('put the token under XDG_CONFIG_HOME, ~/.config or APPDATA', () => {
    assert.equal(tokenPath({ env: { XDG_CONFIG_HOME: '/x' }, platform: 'linux', home: '/h' }, 5), '/x/onthefly/dashboard-5.token');
    assert.equal(configRoot({ env: {}, platform: 'linux', home: '/h' }), '/h/.config');
    assert.equal(configRoot({ env: { APPDATA: 'C:\\A', XDG_CONFIG_HOME: '/x' }, platform: 'win32', home: '/h' }), 'C:\\A');
  });
  it('take the port from the environment first, then the setting, then 47621', () => {
    assert.equal(resolvePort({}, undefined), 47621);
    assert.equal(resolvePort({}, 5000), 5000);
    assert.equal(resolvePort({ ONTHEFLY_DASHBOARD_PORT: '6000' }, 5000), 6000);
    assert.throws(() => resolvePort({ ONTHEFLY_DASHBOARD_PORT: 'abc' }), /ONTHEFLY_DASHBOARD_PORT=abc is not a TCP port/);
    assert.throws(() => resolvePort({}, 70000), /onthefly.port=70000/);
  });
});

describe('choosePython', () => {
  it('prefers the setting, then a workspace .venv, then python3', () => {
    const exists = (p: string) => p === '/w2/.venv/bin/python';
    assert.equal(choosePython(' /opt/py ', ['/w1', '/w2'], exists, 'linux'), '/opt/py');
    assert.equal(choosePython('', ['/w1', '/w2'], exists, 'linux'), '/w2/.venv/bin/python');
    assert.equal(choosePython(undefined, ['/w1'], exists, 'linux'), 'python3');
    assert.equal(choosePython(undefined, [], exists, 'win32'), 'python');
  });
  it('reads the last line of an error output', () => {
    assert.equal(lastLine('Traceback...\n  x\nError: the session is gone\n\n'), 'Error: the session is gone');
  });
});

describe('session summaries', () => {
  it('take the run from the latest state, else from the hello', () => {
    const client = { session: 's', project: 'p', run: 'r0', pid: 7, version: '1', host: 'h' };
    const s = summarize('s', { client, connection: undefined, state: { state: 'paused', step: 5, epoch: 1, run: 'r1', samples_per_s: 10 }, connectedAt: 1 });
    assert.deepEqual(
      { run: s.run, state: s.state, step: s.step, connected: s.connected, readOnly: s.readOnly, sps: s.samplesPerS },
      { run: 'r1', state: 'paused', step: 5, connected: false, readOnly: false, sps: 10 },
    );
    assert.equal(summarize('s', { client: { ...client, served: true }, connection: undefined, state: undefined, connectedAt: 1 }).readOnly, true);
  });
});

describe('the status bar text', () => {
  const s = (over: Record<string, unknown>) => ({ id: 's1', project: 'p', run: 'r', host: '', pid: 1, version: '', connected: true, readOnly: false, state: 'running', step: 42, epoch: 0, samplesPerS: null, connectedAt: 0, ...over }) as never;
  it('says waiting, connected, running or paused', async () => {
    const { statusText } = await import('../../src/bridge/statusText');
    assert.match(statusText(false, [], 'port taken').tooltip, /not listening: port taken/);
    assert.equal(statusText(true, []).text, '$(circle-outline) OnTheFly: waiting');
    assert.equal(statusText(true, [s({})]).text, '$(play) OnTheFly: running · step 42');
    assert.equal(statusText(true, [s({ state: 'paused' })]).text, '$(debug-pause) OnTheFly: paused · step 42');
    assert.equal(statusText(true, [s({ state: 'finished' }), s({ id: 's2', state: 'idle' })]).text, '$(plug) OnTheFly: connected (+1)');
    assert.equal(statusText(true, [s({ connected: false })]).text, '$(circle-outline) OnTheFly: waiting');
  });
});
