/**
 * The dashboard page, for the VS Code webview and the browser mode alike:
 * a strict Content-Security-Policy (scripts only with this page's nonce, no
 * remote origins, no inline handlers) and the built assets.
 */
import { randomBytes } from 'node:crypto';

export interface PageOptions {
  /** Origin(s) the assets come from (`webview.cspSource`, or `'self'`). */
  cspSource: string;
  scriptUri: string;
  styleUri: string;
  /** Extra connect-src origins (the browser mode's WebSocket). */
  connectSrc?: string;
  nonce?: string;
  title?: string;
}

export function newNonce(): string {
  return randomBytes(16).toString('base64').replace(/[^A-Za-z0-9]/g, '');
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] as string);

/** The page's Content-Security-Policy. */
export function contentSecurityPolicy(o: { cspSource: string; nonce: string; connectSrc?: string }): string {
  return [
    "default-src 'none'",
    `img-src ${o.cspSource} data: blob:`,
    `style-src ${o.cspSource} 'nonce-${o.nonce}'`,
    `font-src ${o.cspSource}`,
    `script-src 'nonce-${o.nonce}'`,
    `connect-src ${o.connectSrc ?? "'none'"}`,
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; ');
}

export function dashboardHtml(o: PageOptions): string {
  const nonce = o.nonce ?? newNonce();
  const csp = contentSecurityPolicy({ cspSource: o.cspSource, nonce, connectSrc: o.connectSrc });
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${esc(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${esc(o.styleUri)}" nonce="${nonce}">
<title>${esc(o.title ?? 'OnTheFly')}</title>
</head>
<body>
<header id="session-bar" class="session-bar" aria-label="Session"></header>
<div id="notice" role="status" aria-live="polite" data-testid="notice"></div>
<nav role="tablist" aria-label="Views">
  <button type="button" role="tab" data-tab="charts" data-testid="tab-charts" aria-controls="panel-charts">Charts</button>
  <button type="button" role="tab" data-tab="samples" data-testid="tab-samples" aria-controls="panel-samples">Per-sample</button>
  <button type="button" role="tab" data-tab="runs" data-testid="tab-runs" aria-controls="panel-runs">Runs</button>
  <button type="button" role="tab" data-tab="logs" data-testid="tab-logs" aria-controls="panel-logs">Logs</button>
</nav>
<main>
<section id="panel-charts" role="tabpanel" aria-label="Charts">
  <div class="toolbar">
    <label>X axis <select id="x-mode" data-testid="x-mode"><option value="step">steps</option><option value="epoch">epochs</option></select></label>
    <span class="hint">drag to zoom · double-click or Esc to reset · arrows pan · Shift+wheel pans · Ctrl+wheel zooms</span>
    <output id="test-result" data-testid="test-result"></output>
  </div>
  <div id="charts" class="charts-grid"></div>
</section>
<section id="panel-samples" role="tabpanel" aria-label="Per-sample losses" hidden><div id="samples"></div></section>
<section id="panel-runs" role="tabpanel" aria-label="Runs" hidden><div id="runs" class="runs-grid"></div></section>
<section id="panel-logs" role="tabpanel" aria-label="Logs" hidden><div id="logs"></div></section>
</main>
<script nonce="${nonce}" src="${esc(o.scriptUri)}"></script>
</body>
</html>
`;
}
