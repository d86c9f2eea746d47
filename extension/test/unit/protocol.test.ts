import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { fingerprint } from '../../src/protocol/fingerprint';
import { FrameTooLarge, LineSplitter } from '../../src/protocol/framing';
import { dashboardProof, proofMatches, trainerProof } from '../../src/protocol/handshake';
import { MessageError, checkNotification, checkResult, decode, encode } from '../../src/protocol/codec';
import { ERROR_CODES, METHODS, NOTIFICATIONS } from '../../src/protocol/spec';

// out/test/unit -> repository root
const REPO = path.resolve(__dirname, '..', '..', '..', '..');
const DOCS = path.join(REPO, 'docs', 'protocol.md');
const FIXTURES = path.join(REPO, 'tests', 'fixtures', 'protocol');
const PYTHON = path.join(REPO, '.venv', 'bin', 'python');

describe('the protocol mirror', () => {
  it('has the fingerprint written in docs/protocol.md', (t) => {
    if (!fs.existsSync(DOCS)) return t.skip('docs/protocol.md is not in this checkout');
    const m = /protocol-hash:\s*`?([0-9a-f]{64})/.exec(fs.readFileSync(DOCS, 'utf8'));
    assert.ok(m, 'docs/protocol.md has a protocol-hash line');
    assert.equal(fingerprint(), m[1], 'src/protocol/spec.ts differs from docs/protocol.md: update both with onthefly/protocol/spec.py');
  });

  it('has the same fingerprint as onthefly/protocol/spec.py', (t) => {
    if (!fs.existsSync(PYTHON)) return t.skip('no .venv with the Python package in this checkout');
    const py = execFileSync(PYTHON, ['-c', 'from onthefly.protocol import spec; print(spec.fingerprint())'], { cwd: REPO }).toString().trim();
    assert.equal(fingerprint(), py);
  });

  it('computes the proofs of the worked example in docs/protocol.md', () => {
    const token = Buffer.from([...Array(32).keys()]).toString('hex');
    const D = '00112233445566778899aabbccddeeff';
    const T = 'ffeeddccbbaa99887766554433221100';
    assert.equal(trainerProof(token, D, T), 'e8256d0712f5101bbb2823fd55972b4fcc356195b39a760b4baa1ee8b8e0be0c');
    assert.equal(dashboardProof(token, T, D), 'b8f17930398be865ed887a1df0a268c6ecc9c09d1a6dfb5c5a21df0fb9906475');
  });

  it('computes the same proofs as the Python side', () => {
    // the example of onthefly/link/handshake.py
    const token = '11'.repeat(32);
    assert.equal(trainerProof(token, 'aa'.repeat(16), 'bb'.repeat(16)).slice(0, 16), '0f4b6acf8c6120fc');
  });

  it('keeps the two proofs apart and matches them in constant time', () => {
    const token = 'ab'.repeat(32);
    const t = trainerProof(token, 'aa'.repeat(16), 'bb'.repeat(16));
    const d = dashboardProof(token, 'bb'.repeat(16), 'aa'.repeat(16));
    assert.notEqual(t, d);
    assert.ok(proofMatches(t, t));
    assert.ok(!proofMatches(t, d));
    assert.ok(!proofMatches(t, t.toUpperCase()));
    assert.ok(!proofMatches(t, 42));
    assert.ok(!proofMatches(t, t.slice(2)));
  });
});

describe('golden messages', () => {
  const files = fs.existsSync(FIXTURES) ? fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.json')) : [];
  it('exist in tests/fixtures/protocol', (t) => {
    if (!files.length) return t.skip('tests/fixtures/protocol/ holds no golden messages in this checkout');
    assert.ok(files.length > 0);
  });
  for (const f of files) {
    it(`decodes and checks ${f}`, () => {
      const text = fs.readFileSync(path.join(FIXTURES, f), 'utf8');
      for (const raw of goldenMessages(JSON.parse(text))) {
        const m = decode(JSON.stringify(raw));
        assert.deepEqual(JSON.parse(encode(m)), raw, 'encode(decode(x)) gives x back');
        const [kind, name] = f.split('.');
        if (kind === 'notification') assert.deepEqual(m.kind === 'notification' && checkNotification(m.method, m.params), [], f);
        if (kind === 'request') assert.ok(m.kind === 'request' && METHODS[m.method] && m.method === name, f);
        if (kind === 'response') assert.deepEqual(m.kind === 'response' && checkResult(name, m.result), [], f);
        if (kind === 'error') assert.equal(m.kind === 'error' && m.code, ERROR_CODES[name as keyof typeof ERROR_CODES], f);
      }
    });
  }
});

/** The JSON-RPC messages of a golden file: the file itself, a list, or the values of an object that hold them. */
function goldenMessages(v: unknown): Record<string, unknown>[] {
  if (Array.isArray(v)) return v.flatMap(goldenMessages);
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (o.jsonrpc === '2.0') return [o];
    return Object.values(o).flatMap(goldenMessages);
  }
  return [];
}

describe('decode', () => {
  const code = (line: string): number => {
    try {
      decode(line);
    } catch (e) {
      assert.ok(e instanceof MessageError);
      return e.code;
    }
    return 0;
  };
  it('reads each kind of message', () => {
    assert.equal(decode('{"jsonrpc":"2.0","id":1,"method":"status","params":{}}').kind, 'request');
    assert.equal(decode('{"jsonrpc":"2.0","method":"log","params":{"level":"info","message":"x"}}').kind, 'notification');
    assert.equal(decode('{"jsonrpc":"2.0","id":1,"result":{"state":"paused"}}').kind, 'response');
    const e = decode('{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}');
    assert.equal(e.kind === 'error' && e.code, -32601);
  });
  it('refuses what is not JSON-RPC 2.0 with the right code', () => {
    assert.equal(code('{not json'), ERROR_CODES.parse_error);
    assert.equal(code('[{"jsonrpc":"2.0","method":"x"}]'), ERROR_CODES.invalid_request);
    assert.equal(code('42'), ERROR_CODES.invalid_request);
    assert.equal(code('{"jsonrpc":"1.0","method":"x"}'), ERROR_CODES.invalid_request);
    assert.equal(code('{"jsonrpc":"2.0"}'), ERROR_CODES.invalid_request);
    assert.equal(code('{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"x"}}'), ERROR_CODES.invalid_request);
    assert.equal(code('{"jsonrpc":"2.0","id":{},"method":"x"}'), ERROR_CODES.invalid_request);
  });
  it('writes non-finite numbers as null', () => {
    const line = encode({ kind: 'notification', method: 'steps', params: { step: [1], loss: [Number.NaN] } });
    assert.equal(line, '{"jsonrpc":"2.0","method":"steps","params":{"step":[1],"loss":[null]}}\n');
  });
});

describe('payload checks', () => {
  it('accept columnar steps of one length and refuse ragged ones', () => {
    assert.deepEqual(checkNotification('steps', { step: [1, 2], loss: [0.5, 0.4] }), []);
    assert.equal(checkNotification('steps', { step: [1, 2], loss: [0.5] }).length, 1);
    assert.equal(checkNotification('steps', { step: [1.5] }).length, 1);
    assert.equal(checkNotification('steps', { step: [1], loss: 3 }).length, 1);
  });
  it('name the field that is wrong', () => {
    assert.match(checkNotification('state', { state: 'dancing', step: 1, epoch: 0 })[0], /'state' must be one of/);
    assert.match(checkNotification('log', { level: 'info' })[0], /missing 'message'/);
    assert.match(checkNotification('nope', {})[0], /unknown notification/);
    assert.deepEqual(checkResult('pause', { state: 'paused' }), []);
  });
  it('list every method and notification of the protocol', () => {
    assert.deepEqual(Object.keys(METHODS), ['status', 'pause', 'resume', 'stop', 'test', 'checkpoint', 'query', 'report', 'slice', 'export_slice', 'export']);
    assert.deepEqual(Object.keys(NOTIFICATIONS), ['state', 'run', 'steps', 'epoch', 'test', 'checkpoint', 'log', 'error']);
  });
});

describe('LineSplitter', () => {
  it('joins lines split across chunks and skips blank ones', () => {
    const s = new LineSplitter();
    assert.deepEqual(s.push(Buffer.from('{"a"')), []);
    assert.deepEqual(s.push(Buffer.from(':1}\n\n  \n{"b":2}\n{"c"')), ['{"a":1}', '{"b":2}']);
    assert.equal(s.buffered, 4);
    assert.deepEqual(s.push(Buffer.from(':3}\n')), ['{"c":3}']);
  });
  it('keeps multi-byte characters split across chunks whole', () => {
    const s = new LineSplitter();
    const bytes = Buffer.from('"é€"\n');
    assert.deepEqual(s.push(bytes.subarray(0, 2)), []);
    assert.deepEqual(s.push(bytes.subarray(2)), ['"é€"']);
  });
  it('stops a line at the limit without waiting for its end', () => {
    const s = new LineSplitter(10);
    assert.deepEqual(s.push(Buffer.from('0123456789\n')), ['0123456789']);
    assert.throws(() => s.push(Buffer.from('0123456789A')), FrameTooLarge);
  });
});
