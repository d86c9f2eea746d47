import * as assert from 'node:assert/strict';
import { after, it } from 'node:test';
import type { ToView } from '../../src/bridge/messages';
import { type HostActions, ViewLink } from '../../src/core/viewLink';
import { silentLogger } from '../../src/core/interfaces';
import { type Harness, startCore } from '../support/coreHarness';
import { FakeTrainer, until } from '../support/fakeTrainer';

const actions: HostActions = {
  saveFile: async (name, data) => ({ ok: true, message: `saved ${name} (${data.length} bytes)` }),
  exportSession: async (session) => ({ ok: false, message: `cannot export ${session}` }),
  loadSession: async () => ({ ok: true, message: 'loaded' }),
};

let h: Harness;
after(async () => h && (await h.close()));

it('holds messages until the view is ready, then sends a snapshot and forwards requests', async () => {
  h = await startCore();
  const posted: ToView[] = [];
  const view = new ViewLink(h.core, { post: (m) => posted.push(m) }, actions, silentLogger, { type: 'host', mode: 'browser', version: 't' });
  const t = new FakeTrainer({ port: h.port, token: h.token(), handlers: { status: () => ({ state: 'running', step: 1, epoch: 0, session: 'sess-1', run: null, project: 'p', pid: 1 }) } });
  await t.welcomed;
  view.receive({ type: 'rpc', requestId: 1, session: 'sess-1', method: 'status', params: {} });
  view.receive({ type: 'saveFile', requestId: 2, name: 'a.csv', data: 'eCx5Cg==', encoding: 'base64' });
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(posted.length, 0, 'nothing before ready');
  view.receive({ type: 'ready' });
  assert.deepEqual(posted.slice(0, 3).map((m) => m.type), ['host', 'link', 'sessions']);
  assert.ok(posted.some((m) => m.type === 'rpcResult' && m.requestId === 1));
  assert.ok(posted.some((m) => m.type === 'fileDone' && m.requestId === 2 && m.message === 'saved a.csv (4 bytes)'));
  t.notify('log', { level: 'warning', message: 'hot' });
  await until(() => posted.some((m) => m.type === 'notification' && m.method === 'log' && m.params.message === 'hot'), 'the log reaches the view');
  view.receive({ type: 'rpc', requestId: 3, session: 'ghost', method: 'status', params: {} });
  view.receive({ type: 'exportSession', requestId: 4, session: 'sess-1' });
  await until(() => posted.some((m) => m.type === 'rpcError' && m.requestId === 3) && posted.some((m) => m.type === 'fileDone' && m.requestId === 4), 'errors come back');
  const err = posted.find((m) => m.type === 'rpcError');
  assert.match(err && err.type === 'rpcError' ? err.message : '', /no session 'ghost'/);
  view.dispose();
  const n = posted.length;
  t.notify('log', { level: 'info', message: 'after dispose' });
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(posted.length, n, 'a disposed view gets nothing');
  t.close();
});
