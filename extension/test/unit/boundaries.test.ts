import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { it } from 'node:test';

const SRC = path.resolve(__dirname, '..', '..', '..', 'src');
const WEBVIEW = path.resolve(__dirname, '..', '..', '..', 'webview', 'src');

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? files(path.join(dir, d.name)) : d.name.endsWith('.ts') ? [path.join(dir, d.name)] : []));
}

const IMPORT_VSCODE = /(from\s+['"]vscode['"]|require\(\s*['"]vscode['"]\s*\)|import\s+['"]vscode['"])/;

it('keeps vscode out of the core, the protocol, the bridge and the browser mode', () => {
  const checked = ['core', 'protocol', 'bridge', 'browser'].flatMap((d) => files(path.join(SRC, d)));
  assert.ok(checked.length > 10);
  const offenders = checked.filter((f) => IMPORT_VSCODE.test(fs.readFileSync(f, 'utf8')));
  assert.deepEqual(offenders.map((f) => path.relative(SRC, f)), []);
});

it('calls acquireVsCodeApi in one small module of the webview only', () => {
  const callers = files(WEBVIEW).filter((f) => /acquireVsCodeApi\s*\(/.test(fs.readFileSync(f, 'utf8')));
  assert.deepEqual(callers.map((f) => path.basename(f)), ['host.ts']);
});

it('gives the webview no inline handlers and no remote origins', () => {
  for (const f of files(WEBVIEW)) {
    const text = fs.readFileSync(f, 'utf8');
    assert.doesNotMatch(text, /\bon[a-z]+\s*=\s*["']/, `${f} sets an inline handler`);
    assert.doesNotMatch(text, /https?:\/\/(?!127\.0\.0\.1|localhost|www\.w3\.org)/, `${f} names a remote origin`);
  }
});
