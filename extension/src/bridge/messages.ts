/**
 * Messages between the host (VS Code extension host, or the browser-mode
 * server) and the dashboard view, as discriminated unions split by the part
 * of the view they serve. The view sends `ready` first; the host holds its
 * messages until then.
 */
import type { TrainerNotification } from '../protocol/types';
import type { SessionSummary } from './session';

// -- the link: sessions, connection status, trainer events --------------------

export type LinkToView =
  | { type: 'link'; listening: boolean; port: number; error?: string }
  | { type: 'sessions'; sessions: SessionSummary[] }
  | ({ type: 'notification'; session: string } & TrainerNotification);

// -- requests forwarded to a training process ---------------------------------

export type RpcFromView = { type: 'rpc'; requestId: number; session: string; method: string; params: Record<string, unknown> };

export type RpcToView =
  | { type: 'rpcResult'; requestId: number; result: unknown }
  | { type: 'rpcError'; requestId: number; code: number; message: string };

// -- files: chart images and data, session export/load ------------------------

export type FilesFromView =
  | { type: 'saveFile'; requestId: number; name: string; data: string; encoding: 'utf8' | 'base64' }
  | { type: 'exportSession'; requestId: number; session: string; path?: string }
  | { type: 'loadSession'; requestId: number; path?: string };

export type FilesToView =
  | { type: 'fileDone'; requestId: number; ok: boolean; message: string; path?: string };

// -- the view's life ----------------------------------------------------------

export type LifecycleFromView = { type: 'ready' } | { type: 'forgetSession'; session: string };

export type HostInfo = { type: 'host'; mode: 'vscode' | 'browser'; version: string };

export type ToView = LinkToView | RpcToView | FilesToView | HostInfo;
export type FromView = RpcFromView | FilesFromView | LifecycleFromView;

/** True when a value received from a view looks like a {@link FromView} message. */
export function isFromView(v: unknown): v is FromView {
  if (!v || typeof v !== 'object') return false;
  const t = (v as { type?: unknown }).type;
  return t === 'ready' || t === 'rpc' || t === 'saveFile' || t === 'exportSession' || t === 'loadSession' || t === 'forgetSession';
}
