/**
 * The dashboard webview panel: one at a time, created or revealed by the
 * command and revived after a reload by the serializer. Its HTML has a strict
 * CSP with a nonce, and it may load only the built webview assets.
 */
import * as vscode from 'vscode';
import { isFromView } from '../bridge/messages';
import { dashboardHtml } from '../bridge/html';
import type { DashboardCore } from '../core/hub';
import type { Logger } from '../core/interfaces';
import { type HostActions, ViewLink } from '../core/viewLink';

export const VIEW_TYPE = 'onthefly.dashboard';

export interface PanelDeps {
  extensionUri: vscode.Uri;
  core: () => Promise<DashboardCore>;
  actions: HostActions;
  logger: Logger;
  version: string;
}

export function webviewOptions(extensionUri: vscode.Uri): vscode.WebviewOptions {
  return {
    enableScripts: true,
    localResourceRoots: [vscode.Uri.joinPath(extensionUri, 'dist', 'webview')],
  };
}

export class DashboardPanel {
  static current: DashboardPanel | undefined;
  private readonly disposables: vscode.Disposable[] = [];
  private view: ViewLink | undefined;

  /** Reveal the panel, or create it. */
  static createOrShow(deps: PanelDeps): DashboardPanel {
    const column = vscode.window.activeTextEditor ? vscode.ViewColumn.Beside : vscode.ViewColumn.One;
    if (DashboardPanel.current) {
      DashboardPanel.current.panel.reveal(column);
      return DashboardPanel.current;
    }
    const panel = vscode.window.createWebviewPanel(VIEW_TYPE, 'OnTheFly', column, webviewOptions(deps.extensionUri));
    return (DashboardPanel.current = new DashboardPanel(panel, deps));
  }

  /** Take back a panel VS Code restored after a reload. */
  static revive(panel: vscode.WebviewPanel, deps: PanelDeps): DashboardPanel {
    panel.webview.options = webviewOptions(deps.extensionUri);
    DashboardPanel.current?.dispose();
    return (DashboardPanel.current = new DashboardPanel(panel, deps));
  }

  private constructor(
    readonly panel: vscode.WebviewPanel,
    private readonly deps: PanelDeps,
  ) {
    panel.iconPath = vscode.Uri.joinPath(deps.extensionUri, 'media', 'icon.svg');
    panel.webview.html = this.html();
    panel.onDidDispose(() => this.dispose(), null, this.disposables);
    // Messages arriving before the core is up wait for it; the view's `ready` comes first.
    const pending: unknown[] = [];
    let ready = false;
    panel.webview.onDidReceiveMessage(
      (m: unknown) => {
        if (!isFromView(m)) return;
        if (ready && this.view) this.view.receive(m);
        else pending.push(m);
      },
      null,
      this.disposables,
    );
    void deps.core().then(
      (core) => {
        this.view = new ViewLink(
          core,
          { post: (m) => void panel.webview.postMessage(m) },
          deps.actions,
          deps.logger,
          { type: 'host', mode: 'vscode', version: deps.version },
        );
        ready = true;
        for (const m of pending.splice(0)) if (isFromView(m)) this.view.receive(m);
      },
      (e: Error) => void vscode.window.showErrorMessage(`OnTheFly: ${e.message}`),
    );
  }

  dispose(): void {
    if (DashboardPanel.current === this) DashboardPanel.current = undefined;
    this.view?.dispose();
    this.panel.dispose();
    while (this.disposables.length) this.disposables.pop()?.dispose();
  }

  private html(): string {
    const webview = this.panel.webview;
    const asset = (name: string) => webview.asWebviewUri(vscode.Uri.joinPath(this.deps.extensionUri, 'dist', 'webview', name)).toString();
    return dashboardHtml({ cspSource: webview.cspSource, scriptUri: asset('webview.js'), styleUri: asset('webview.css') });
  }
}
