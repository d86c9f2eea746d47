/** Logs and events of the session, newest last, with a level filter. */
import type { LogLevel } from '../../src/protocol/spec';
import type { LogLine } from './records';

const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warning: 2, error: 3 };
const MAX_LINES = 2000;

export class LogsView {
  private lines: LogLine[] = [];
  private filter: LogLevel = 'info';
  private list: HTMLElement;

  constructor(root: HTMLElement) {
    const bar = document.createElement('div');
    bar.className = 'toolbar';
    const label = document.createElement('label');
    label.textContent = 'Show from level ';
    const sel = document.createElement('select');
    sel.dataset.testid = 'log-level';
    sel.setAttribute('aria-label', 'Lowest level shown');
    for (const l of Object.keys(ORDER)) {
      const o = document.createElement('option');
      o.value = o.textContent = l;
      sel.append(o);
    }
    sel.value = this.filter;
    sel.addEventListener('change', () => {
      this.filter = sel.value as LogLevel;
      this.render();
    });
    label.append(sel);
    bar.append(label);
    this.list = document.createElement('ol');
    this.list.dataset.testid = 'logs';
    this.list.setAttribute('aria-live', 'polite');
    this.list.tabIndex = 0;
    root.append(bar, this.list);
  }

  clear(): void {
    this.lines = [];
    this.render();
  }

  add(line: LogLine): void {
    this.lines.push(line);
    if (this.lines.length > MAX_LINES) this.lines.splice(0, this.lines.length - MAX_LINES);
    if (ORDER[line.level] >= ORDER[this.filter]) this.list.append(this.item(line));
    while (this.list.childElementCount > MAX_LINES) this.list.firstElementChild?.remove();
  }

  private item(l: LogLine): HTMLElement {
    const li = document.createElement('li');
    li.className = `log-${l.level}`;
    li.dataset.level = l.level;
    const t = new Date(l.time * 1000).toLocaleTimeString();
    li.textContent = `${t} ${l.level.toUpperCase().padEnd(7)} ${l.step != null ? `[step ${l.step}] ` : ''}${l.message}`;
    return li;
  }

  private render(): void {
    this.list.replaceChildren(...this.lines.filter((l) => ORDER[l.level] >= ORDER[this.filter]).map((l) => this.item(l)));
  }
}
