/** The status bar item: waiting / connected / running / paused, with the step; a click shows the dashboard. */
import * as vscode from 'vscode';
import type { SessionSummary } from '../bridge/session';
import { statusText } from '../bridge/statusText';
import { type CoreEvent, lastOfSteps } from '../core/hub';

export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('onthefly.status', vscode.StatusBarAlignment.Left, 50);
  private listening = false;
  private error: string | undefined;
  private sessions: SessionSummary[] = [];

  constructor() {
    this.item.name = 'OnTheFly';
    this.item.command = 'onthefly.showDashboard';
    this.render();
    this.item.show();
  }

  onEvent(e: CoreEvent): void {
    if (e.type === 'link') {
      this.listening = e.listening;
      this.error = e.error;
    } else if (e.type === 'sessions') this.sessions = e.sessions;
    else if (e.type === 'notification' && e.method === 'steps') {
      const { step } = lastOfSteps(e.params);
      const s = this.sessions.find((x) => x.id === e.session);
      if (!s || step === undefined || step <= s.step) return;
      this.sessions = this.sessions.map((x) => (x === s ? { ...x, step } : x));
    } else return;
    this.render();
  }

  private render(): void {
    const { text, tooltip } = statusText(this.listening, this.sessions, this.error);
    this.item.text = text;
    this.item.tooltip = tooltip;
  }

  dispose(): void {
    this.item.dispose();
  }
}
