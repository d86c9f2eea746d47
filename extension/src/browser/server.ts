/**
 * The browser mode: the dashboard page over HTTP on 127.0.0.1 and a
 * WebSocket bridge from each tab to the same host core the VS Code adapter
 * uses. Only pages served by this server may open the WebSocket (Origin and
 * Host are checked), so another web site cannot drive a training run.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { isFromView, type ToView } from '../bridge/messages';
import { dashboardHtml } from '../bridge/html';
import type { DashboardCore } from '../core/hub';
import type { Disposable, Logger } from '../core/interfaces';
import { type HostActions, ViewLink } from '../core/viewLink';
import { HOST } from '../protocol/spec';

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

export interface BrowserServerOptions {
  core: DashboardCore;
  actions: HostActions;
  logger: Logger;
  /** dist/webview, holding webview.js and webview.css. */
  assets: string;
  port: number;
  version: string;
}

/** True when a WebSocket upgrade comes from a page of this server (pure). */
export function sameOrigin(headers: http.IncomingHttpHeaders, port: number): boolean {
  const allowed = [`${HOST}:${port}`, `localhost:${port}`];
  const host = headers.host ?? '';
  const origin = headers.origin ?? '';
  return allowed.includes(host) && allowed.some((a) => origin === `http://${a}`);
}

export class BrowserServer implements Disposable {
  private http: http.Server | undefined;
  private wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 * 1024 });
  private views = new Set<ViewLink>();
  port = 0;

  constructor(private readonly o: BrowserServerOptions) {}

  get url(): string {
    return `http://${HOST}:${this.port}/`;
  }

  /** Listen; resolves with the URL to open. */
  async start(): Promise<string> {
    const server = http.createServer((req, res) => this.serve(req, res));
    server.on('upgrade', (req, socket, head) => {
      if (new URL(req.url ?? '/', 'http://x').pathname !== '/ws' || !sameOrigin(req.headers, this.port)) {
        socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.attach(ws));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(new Error(e.code === 'EADDRINUSE' ? `port ${this.o.port} on ${HOST} is taken: pass another with --port` : e.message)),
      );
      server.listen(this.o.port, HOST, () => resolve());
    });
    this.http = server;
    this.port = (server.address() as AddressInfo).port;
    return this.url;
  }

  dispose(): void {
    for (const v of this.views) v.dispose();
    for (const c of this.wss.clients) c.terminate();
    this.wss.close();
    this.http?.close();
    this.http?.closeAllConnections?.();
  }

  private attach(ws: WebSocket): void {
    const view = new ViewLink(
      this.o.core,
      { post: (m: ToView) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(m)) },
      this.o.actions,
      this.o.logger,
      { type: 'host', mode: 'browser', version: this.o.version },
    );
    this.views.add(view);
    ws.on('message', (data) => {
      let m: unknown;
      try {
        m = JSON.parse(String(data));
      } catch {
        return;
      }
      if (isFromView(m)) view.receive(m);
    });
    ws.on('close', () => {
      view.dispose();
      this.views.delete(view);
    });
  }

  private serve(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const security = { 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-store', 'Referrer-Policy': 'no-referrer' };
    if (req.method !== 'GET') {
      res.writeHead(405, security).end();
      return;
    }
    if (url.pathname === '/') {
      const html = dashboardHtml({
        cspSource: "'self'",
        scriptUri: '/webview.js',
        styleUri: '/webview.css',
        connectSrc: `'self' ws://${HOST}:${this.port} ws://localhost:${this.port}`,
      });
      res.writeHead(200, { ...security, 'Content-Type': 'text/html; charset=utf-8' }).end(html);
      return;
    }
    const name = path.basename(url.pathname);
    const file = path.join(this.o.assets, name);
    if (url.pathname !== `/${name}` || !TYPES[path.extname(name)] || !fs.existsSync(file)) {
      res.writeHead(404, { ...security, 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, { ...security, 'Content-Type': TYPES[path.extname(name)] });
    fs.createReadStream(file).pipe(res);
  }
}
