/**
 * The VS Code adapter of OnTheFly: commands, settings, the status bar item
 * and the dashboard panel over the host core (src/core), which knows nothing
 * of VS Code. Activated by its commands or a restored panel only.
 */
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as vscode from 'vscode';
import { choosePython, exportSession, serveSession } from '../core/cli';
import { DashboardCore } from '../core/hub';
import type { Logger } from '../core/interfaces';
import { resolvePort } from '../core/paths';
import type { HostActions } from '../core/viewLink';
import { TOKEN_ENV } from '../protocol/spec';
import { DashboardPanel, type PanelDeps, VIEW_TYPE } from './panel';
import { StatusBar } from './statusBar';

let core: DashboardCore | undefined;
let starting: Promise<DashboardCore> | undefined;
const served: ChildProcess[] = [];

function outputLogger(channel: vscode.LogOutputChannel): Logger {
  return {
    debug: (m) => channel.debug(m),
    info: (m) => channel.info(m),
    warn: (m) => channel.warn(m),
    error: (m) => channel.error(m),
  };
}

function settings() {
  const c = vscode.workspace.getConfiguration('onthefly');
  return { port: c.get<number>('port'), pythonPath: c.get<string>('pythonPath') };
}

function folders(): string[] {
  return (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath);
}

function python(): string {
  return choosePython(settings().pythonPath, folders(), fs.existsSync, process.platform);
}

export function activate(context: vscode.ExtensionContext): void {
  const channel = vscode.window.createOutputChannel('OnTheFly', { log: true });
  const logger = outputLogger(channel);
  const status = new StatusBar();
  context.subscriptions.push(channel, status);

  /** The core, started on first use; a port change restarts it. */
  const getCore = (): Promise<DashboardCore> => {
    if (core) return Promise.resolve(core);
    if (starting) return starting;
    starting = (async () => {
      const port = resolvePort(process.env, settings().port);
      const c = new DashboardCore({
        port,
        pathEnv: { env: process.env, platform: process.platform, home: os.homedir() },
        logger,
        token: process.env[TOKEN_ENV] || undefined,
      });
      c.events.subscribe((e) => status.onEvent(e));
      try {
        await c.start();
      } catch (e) {
        status.onEvent(c.link);
        starting = undefined;
        throw e;
      }
      core = c;
      return c;
    })();
    return starting;
  };

  const actions: HostActions = {
    saveFile: async (name, data) => {
      const base = vscode.workspace.workspaceFolders?.[0]?.uri ?? vscode.Uri.file(os.homedir());
      const target = await vscode.window.showSaveDialog({ defaultUri: vscode.Uri.joinPath(base, name), title: `Save ${name}` });
      if (!target) return { ok: false, message: 'not saved' };
      await vscode.workspace.fs.writeFile(target, data);
      return { ok: true, message: `saved ${target.fsPath}`, path: target.fsPath };
    },
    exportSession: (session, file) => runExport(session, file),
    loadSession: (file) => runLoad(file),
  };

  const deps: PanelDeps = {
    extensionUri: context.extensionUri,
    core: getCore,
    actions,
    logger,
    version: String(context.extension.packageJSON.version ?? ''),
  };

  async function runExport(session?: string, file?: string) {
    const c = await getCore();
    if (!session) {
      const sessions = c.sessions();
      if (!sessions.length) {
        const id = await vscode.window.showInputBox({ title: 'Export Session', prompt: 'No session is connected: type a session id (see `onthefly ls`)' });
        if (!id) return { ok: false, message: 'cancelled' };
        session = id;
      } else if (sessions.length === 1) session = sessions[0].id;
      else {
        const pick = await vscode.window.showQuickPick(
          sessions.map((s) => ({ label: s.id, description: `${s.project}${s.connected ? '' : ' (disconnected)'}` })),
          { title: 'Export which session?' },
        );
        if (!pick) return { ok: false, message: 'cancelled' };
        session = pick.label;
      }
    }
    if (!file) {
      const base = vscode.workspace.workspaceFolders?.[0]?.uri ?? vscode.Uri.file(os.homedir());
      const target = await vscode.window.showSaveDialog({
        defaultUri: vscode.Uri.joinPath(base, `onthefly-${session}.zip`),
        filters: { 'OnTheFly session': ['zip'] },
        title: 'Export Session',
      });
      if (!target) return { ok: false, message: 'cancelled' };
      file = target.fsPath;
    }
    const r = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `OnTheFly: exporting session ${session}…` },
      () => exportSession(python(), session!, file!, folders()[0], process.env),
    );
    if (r.ok) void vscode.window.showInformationMessage(`OnTheFly: ${r.message}`);
    else void vscode.window.showErrorMessage(`OnTheFly: export failed: ${r.message}`);
    return r;
  }

  async function runLoad(file?: string) {
    const c = await getCore();
    if (!file) {
      const picked = await vscode.window.showOpenDialog({ canSelectMany: false, filters: { 'OnTheFly session': ['zip'] }, title: 'Load Session' });
      if (!picked?.length) return { ok: false, message: 'cancelled' };
      file = picked[0].fsPath;
    }
    DashboardPanel.createOrShow(deps);
    const r = await serveSession(python(), file, c.port, folders()[0], process.env, logger, (child) => served.push(child));
    if (r.ok) void vscode.window.showInformationMessage(`OnTheFly: ${r.message}`);
    else void vscode.window.showErrorMessage(`OnTheFly: loading failed: ${r.message}`);
    return r;
  }

  context.subscriptions.push(
    vscode.commands.registerCommand('onthefly.showDashboard', () => {
      DashboardPanel.createOrShow(deps);
    }),
    vscode.commands.registerCommand('onthefly.exportSession', async () => {
      try {
        await runExport();
      } catch (e) {
        void vscode.window.showErrorMessage(`OnTheFly: ${(e as Error).message}`);
      }
    }),
    vscode.commands.registerCommand('onthefly.loadSession', async () => {
      try {
        await runLoad();
      } catch (e) {
        void vscode.window.showErrorMessage(`OnTheFly: ${(e as Error).message}`);
      }
    }),
    vscode.window.registerWebviewPanelSerializer(VIEW_TYPE, {
      async deserializeWebviewPanel(panel: vscode.WebviewPanel) {
        DashboardPanel.revive(panel, deps);
      },
    }),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (!e.affectsConfiguration('onthefly.port') || !core) return;
      const old = core;
      core = undefined;
      starting = undefined;
      await old.stop();
      const panel = DashboardPanel.current;
      if (panel) {
        panel.dispose();
        DashboardPanel.createOrShow(deps);
      } else await getCore().catch((err: Error) => void vscode.window.showErrorMessage(`OnTheFly: ${err.message}`));
    }),
    { dispose: () => void deactivate() },
  );
}

export async function deactivate(): Promise<void> {
  for (const c of served.splice(0)) c.kill();
  DashboardPanel.current?.dispose();
  const c = core;
  core = undefined;
  starting = undefined;
  await c?.stop();
}
