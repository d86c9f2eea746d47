/**
 * The one place that knows where the dashboard runs: inside a VS Code webview
 * (the only `acquireVsCodeApi()` call of the app) or in a browser tab, where a
 * WebSocket to the `npm run dashboard` server carries the same messages.
 */
import type { FromView, ToView } from '../../src/bridge/messages';

export interface HostChannel {
  readonly mode: 'vscode' | 'browser';
  post(message: FromView): void;
  onMessage(listener: (message: ToView) => void): void;
  /** Small view state that survives a reload of the view. */
  getState<T>(): T | undefined;
  setState<T>(state: T): void;
}

interface VsCodeApi {
  postMessage(message: unknown): void;
  getState(): unknown;
  setState(state: unknown): void;
}
declare const acquireVsCodeApi: undefined | (() => VsCodeApi);

function vscodeChannel(): HostChannel {
  const api = (acquireVsCodeApi as () => VsCodeApi)();
  return {
    mode: 'vscode',
    post: (m) => api.postMessage(m),
    onMessage: (l) => window.addEventListener('message', (e: MessageEvent) => l(e.data as ToView)),
    getState: <T>() => api.getState() as T | undefined,
    setState: (s) => api.setState(s),
  };
}

function browserChannel(): HostChannel {
  const listeners: Array<(m: ToView) => void> = [];
  let socket: WebSocket | undefined;
  let queue: FromView[] = [];
  let retry = 250;
  const connect = () => {
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
    ws.addEventListener('open', () => {
      retry = 250;
      socket = ws;
      // every (re)connection starts with ready, so the server sends a fresh snapshot
      ws.send(JSON.stringify({ type: 'ready' }));
      for (const m of queue) ws.send(JSON.stringify(m));
      queue = [];
    });
    ws.addEventListener('message', (e: MessageEvent) => {
      const m = JSON.parse(String(e.data)) as ToView;
      for (const l of listeners) l(m);
    });
    ws.addEventListener('close', () => {
      socket = undefined;
      for (const l of listeners) l({ type: 'link', listening: false, port: 0, error: 'the dashboard server is gone: reconnecting…' });
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 2000);
    });
  };
  connect();
  const key = 'onthefly.view';
  return {
    mode: 'browser',
    post: (m) => {
      if (m.type === 'ready') return; // sent on each socket open
      if (socket?.readyState === WebSocket.OPEN) socket.send(JSON.stringify(m));
      else queue.push(m);
    },
    onMessage: (l) => listeners.push(l),
    getState: <T>() => {
      const raw = sessionStorage.getItem(key);
      return raw ? (JSON.parse(raw) as T) : undefined;
    },
    setState: (s) => sessionStorage.setItem(key, JSON.stringify(s)),
  };
}

/** The channel to the host this view runs under. */
export function connectHost(): HostChannel {
  return typeof acquireVsCodeApi === 'function' ? vscodeChannel() : browserChannel();
}
