import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, describe, it } from 'node:test';
import { CLOSED_CODE, RpcError, TIMEOUT_CODE, UNKNOWN_SESSION_CODE } from '../../src/core/connection';
import type { CoreEvent } from '../../src/core/hub';
import { newNonce, trainerProof } from '../../src/protocol/handshake';
import { type Harness, startCore } from '../support/coreHarness';
import { FakeTrainer, tick, until } from '../support/fakeTrainer';

const status = () => ({ state: 'running', step: 3, epoch: 0, session: 'sess-1', run: 'run-1', project: 'demo', pid: 1 });

function sessionsOf(h: Harness) {
  return h.core.sessions();
}

function notificationsOf(events: CoreEvent[]) {
  return events.filter((e): e is CoreEvent & { type: 'notification' } => e.type === 'notification');
}

describe('the dashboard core', () => {
  const harnesses: Harness[] = [];
  const start = async (o?: Parameters<typeof startCore>[0]) => {
    const h = await startCore(o);
    harnesses.push(h);
    return h;
  };
  after(async () => {
    for (const h of harnesses) await h.close();
  });

  it('writes a 0600 token file of 64 hex digits and removes it when it stops', async () => {
    const h = await startCore();
    const st = fs.statSync(h.core.tokenFile);
    assert.equal(st.mode & 0o777, 0o600);
    assert.match(h.token(), /^[0-9a-f]{64}$/);
    assert.ok(h.core.tokenFile.endsWith(`/onthefly/dashboard-${h.port}.token`));
    await h.close();
    assert.ok(!fs.existsSync(h.core.tokenFile));
  });

  it('says which port is taken when another dashboard listens', async () => {
    const h = await start();
    const { DashboardCore } = await import('../../src/core/hub');
    const twin = new DashboardCore({ port: h.port, pathEnv: { env: { XDG_CONFIG_HOME: h.config }, platform: 'linux', home: h.config }, logger: console });
    await assert.rejects(twin.start(), new RegExp(`port ${h.port} .* is taken`));
    assert.equal(h.token().length, 64, 'the running dashboard keeps its token file');
  });

  it('welcomes a trainer with the token, proves itself and lists its session', async () => {
    const h = await start();
    const t = new FakeTrainer({ port: h.port, token: h.token(), handlers: { status } });
    assert.equal(await t.welcomed, true, 'the dashboard proof checks out');
    await until(() => sessionsOf(h).some((s) => s.id === 'sess-1' && s.connected && s.step === 3), 'the session is listed with its status');
    const s = sessionsOf(h)[0];
    assert.equal(s.project, 'demo');
    assert.equal(s.state, 'running');
    t.close();
    await until(() => !sessionsOf(h)[0].connected, 'the session shows as disconnected');
  });

  it('closes a trainer that has no token without serving it', async () => {
    const h = await start({ handshakeTimeoutMs: 200 });
    const t = new FakeTrainer({ port: h.port, token: undefined });
    await t.closed;
    assert.equal(await t.welcomed, false);
    assert.deepEqual(sessionsOf(h), []);
    assert.ok(h.logs.some((l) => /no hello from the training process/.test(l)));
  });

  it('closes a trainer whose proof is wrong', async () => {
    const h = await start();
    const t = new FakeTrainer({ port: h.port, token: 'cd'.repeat(32) });
    await t.closed;
    assert.equal(await t.welcomed, false);
    assert.deepEqual(sessionsOf(h), []);
    assert.ok(h.logs.some((l) => /proof does not match/.test(l)));
  });

  it('refuses a replayed hello, both the recorded proof and a reused nonce', async () => {
    const h = await start();
    const first = new FakeTrainer({ port: h.port, token: h.token(), handlers: { status } });
    assert.equal(await first.welcomed, true);
    // the recorded proof is bound to the first connection's dashboard nonce
    const replay = new FakeTrainer({ port: h.port, token: h.token(), nonce: first.sentNonce, proof: first.sentProof, session: 'x' });
    await replay.closed;
    assert.equal(await replay.welcomed, false);
    // a valid proof over a nonce already used is refused too
    const reuse = new FakeTrainer({ port: h.port, token: h.token(), nonce: first.sentNonce, session: 'y' });
    await reuse.closed;
    assert.ok(h.logs.some((l) => /replayed hello is refused/.test(l)));
    assert.deepEqual(sessionsOf(h).map((s) => s.id), ['sess-1']);
    first.close();
  });

  it('refuses another protocol version with a message naming both', async () => {
    const h = await start();
    const t = new FakeTrainer({ port: h.port, token: h.token(), protocol: 2 });
    await t.closed;
    assert.ok(h.logs.some((l) => /speaks protocol 2, this onthefly speaks 1/.test(l)));
    assert.deepEqual(sessionsOf(h), []);
  });

  it('closes a connection that sends anything before its hello', async () => {
    const h = await start();
    const t = new FakeTrainer({ port: h.port, token: undefined });
    await t.waitFor((m) => m.kind === 'notification' && m.method === 'hello');
    t.notify('steps', { step: [1], loss: [0.5] });
    await t.closed;
    assert.equal(notificationsOf(h.events).length, 0);
  });

  it('forwards requests and their errors, and times out', async () => {
    const h = await start();
    const t = new FakeTrainer({
      port: h.port,
      token: h.token(),
      handlers: {
        status,
        pause: () => ({ state: 'paused' }),
        report: () => {
          throw new Error('no pass finished yet: wait for the end of an epoch');
        },
      },
    });
    await t.welcomed;
    await until(() => sessionsOf(h).length === 1, 'connected');
    assert.deepEqual(await h.core.call('sess-1', 'pause'), { state: 'paused' });
    await assert.rejects(h.core.call('sess-1', 'report', {}), (e: unknown) => e instanceof RpcError && e.code === -32000 && /wait for the end/.test(e.message));
    await assert.rejects(h.core.call('nobody', 'status'), (e: unknown) => e instanceof RpcError && e.code === UNKNOWN_SESSION_CODE);
    const conn = h.core.registry.get('sess-1')!.connection!;
    await assert.rejects(conn.request('query', { sql: 'select 1' }, 100), (e: unknown) => e instanceof RpcError && e.code === -32601);
    // a trainer that never answers
    t.socket.pause();
    await assert.rejects(conn.request('status', {}, 100), (e: unknown) => e instanceof RpcError && e.code === TIMEOUT_CODE);
    t.socket.resume();
    const pending = conn.request('status', {}, 5000);
    t.close();
    await assert.rejects(pending, (e: unknown) => e instanceof RpcError && e.code === CLOSED_CODE);
  });

  it('fans notifications out to every subscriber in order, past a failing one', async () => {
    const h = await start();
    const seen: number[][] = [[], []];
    h.core.events.subscribe(() => {
      throw new Error('a broken view');
    });
    h.core.events.subscribe((e) => e.type === 'notification' && e.method === 'steps' && seen[0].push(e.params.step[0]));
    h.core.events.subscribe((e) => e.type === 'notification' && e.method === 'steps' && seen[1].push(e.params.step[0]));
    const t = new FakeTrainer({ port: h.port, token: h.token(), handlers: { status } });
    await t.welcomed;
    for (let i = 0; i < 50; i++) t.notify('steps', { step: [i], loss: [1 / (i + 1)] });
    await until(() => seen[1].length === 50, 'all steps arrived');
    assert.deepEqual(seen[0], [...Array(50).keys()]);
    assert.deepEqual(seen[1], seen[0]);
    t.close();
  });

  it('serves several trainers told apart by session id, and a reconnect takes its session back', async () => {
    const h = await start();
    const a = new FakeTrainer({ port: h.port, token: h.token(), session: 'A', handlers: { status: () => ({ ...status(), session: 'A', step: 10 }) } });
    const b = new FakeTrainer({ port: h.port, token: h.token(), session: 'B', handlers: { status: () => ({ ...status(), session: 'B', step: 20 }) } });
    await Promise.all([a.welcomed, b.welcomed]);
    await until(() => sessionsOf(h).filter((s) => s.connected).length === 2, 'both connected');
    assert.equal(((await h.core.call('A', 'status')) as { step: number }).step, 10);
    assert.equal(((await h.core.call('B', 'status')) as { step: number }).step, 20);
    a.notify('log', { level: 'info', message: 'from A' });
    b.notify('log', { level: 'info', message: 'from B', session: 'A' }); // a payload cannot claim another session
    await until(() => notificationsOf(h.events).filter((e) => e.method === 'log').length === 2, 'both logs');
    const logs = notificationsOf(h.events).filter((e) => e.method === 'log').map((e) => `${e.session}:${e.params.message}`);
    assert.deepEqual(logs.sort(), ['A:from A', 'B:from B']);
    const a2 = new FakeTrainer({ port: h.port, token: h.token(), session: 'A', handlers: { status: () => ({ ...status(), session: 'A', step: 11 }) } });
    await a2.welcomed;
    await a.closed; // the older connection of A is closed
    assert.equal(((await h.core.call('A', 'status')) as { step: number }).step, 11);
    assert.equal(sessionsOf(h).length, 2);
    a2.close();
    b.close();
  });
});

describe('malformed trainer output', () => {
  const harnesses: Harness[] = [];
  after(async () => {
    for (const h of harnesses) await h.close();
  });

  async function connectedPair(h: Harness) {
    const bad = new FakeTrainer({ port: h.port, token: h.token(), session: 'bad', handlers: { status } });
    const good = new FakeTrainer({ port: h.port, token: h.token(), session: 'good', handlers: { status } });
    await Promise.all([bad.welcomed, good.welcomed]);
    return { bad, good };
  }

  async function goodStillWorks(h: Harness, good: FakeTrainer) {
    good.notify('log', { level: 'info', message: 'still here' });
    await until(() => notificationsOf(h.events).some((e) => e.session === 'good' && e.method === 'log' && e.params.message === 'still here'), 'the other trainer is still served');
    assert.equal(((await h.core.call('good', 'status')) as { state: string }).state, 'running');
  }

  it('closes a connection that sends a line over 16 MiB, and only that one', async () => {
    const h = await startCore();
    harnesses.push(h);
    const { bad, good } = await connectedPair(h);
    const huge = Buffer.alloc(16 * 1024 * 1024 + 10, 0x61); // no newline: never buffered past the limit
    bad.writeRaw(huge);
    await bad.closed;
    assert.ok(h.logs.some((l) => /over the limit/.test(l)));
    await until(() => !h.core.registry.get('bad')!.connection, 'bad is detached');
    await goodStillWorks(h, good);
    good.close();
  });

  it('closes a connection that sends bad JSON or invalid UTF-8, and answers why', async () => {
    const h = await startCore();
    harnesses.push(h);
    const { bad, good } = await connectedPair(h);
    bad.writeRaw('{"jsonrpc":"2.0","method":\n');
    await bad.closed;
    const reply = bad.received.find((m) => m.kind === 'error');
    assert.ok(reply && reply.kind === 'error' && reply.code === -32700);
    const bad2 = new FakeTrainer({ port: h.port, token: h.token(), session: 'bad2', handlers: { status } });
    await bad2.welcomed;
    bad2.writeRaw(Buffer.from([0xff, 0xfe, 0x7b, 0x0a]));
    await bad2.closed;
    await goodStillWorks(h, good);
    good.close();
  });

  it('drops notifications of the wrong shape or unknown name but keeps the connection', async () => {
    const h = await startCore();
    harnesses.push(h);
    const { bad, good } = await connectedPair(h);
    bad.notify('steps', { step: [1, 2], loss: [0.1] });
    bad.notify('state', { state: 'exploding', step: 1, epoch: 0 });
    bad.notify('telepathy', { x: 1 });
    bad.send({ kind: 'response', id: 999, result: {} }); // a reply nobody asked for
    bad.send({ kind: 'request', id: 5, method: 'status', params: {} }); // the dashboard answers no requests
    bad.notify('log', { level: 'info', message: 'valid' });
    await until(() => notificationsOf(h.events).some((e) => e.session === 'bad' && e.method === 'log' && e.params.message === 'valid'), 'the valid one arrives');
    assert.equal(notificationsOf(h.events).filter((e) => e.session === 'bad').length, 1);
    assert.equal(h.core.registry.get('bad')!.connection!.dropped, 3);
    const answer = await bad.waitFor((m) => m.kind === 'error' && m.id === 5);
    assert.equal(answer.kind === 'error' && answer.code, -32601);
    await goodStillWorks(h, good);
    bad.close();
    good.close();
  });

  it('keeps serving after a burst of random bytes from a stranger', async () => {
    const h = await startCore({ handshakeTimeoutMs: 300 });
    harnesses.push(h);
    const { good } = await connectedPair(h);
    for (let i = 0; i < 5; i++) {
      const stranger = new FakeTrainer({ port: h.port, token: undefined });
      const bytes = Buffer.alloc(4096);
      for (let j = 0; j < bytes.length; j++) bytes[j] = (j * 7919 + i * 104729) % 256;
      stranger.writeRaw(bytes);
      await stranger.closed;
    }
    await tick();
    await goodStillWorks(h, good);
    good.close();
  });

  it('does not accept a proof computed for another session nonce pair', async () => {
    const h = await startCore();
    harnesses.push(h);
    const proof = trainerProof(h.token(), newNonce(), newNonce());
    const t = new FakeTrainer({ port: h.port, token: h.token(), proof });
    await t.closed;
    assert.deepEqual(h.core.sessions(), []);
  });
});

describe('the session step', () => {
  it('follows steps messages between state messages', async () => {
    const h = await startCore();
    try {
      const t = new FakeTrainer({ port: h.port, token: h.token(), handlers: { status } });
      await t.welcomed;
      await until(() => h.core.sessions()[0]?.step === 3, 'the status step');
      t.notify('steps', { step: [4, 5, 6], epoch: [0, 0, 1], loss: [1, 1, 1] });
      await until(() => h.core.sessions()[0].step === 6, 'the step advances');
      assert.equal(h.core.sessions()[0].epoch, 1);
      t.notify('steps', { step: [2], loss: [1] }); // never backwards
      t.notify('log', { level: 'info', message: 'sync' });
      await until(() => notificationsOf(h.events).some((e) => e.method === 'log' && e.params.message === 'sync'), 'the log');
      assert.equal(h.core.sessions()[0].step, 6);
      t.close();
    } finally {
      await h.close();
    }
  });
});
