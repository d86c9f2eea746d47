/** The tabs of the dashboard: click or arrow keys, the shown tab remembered. */
import type { ViewPrefs } from './prefs';

export function wireTabs(tabs: HTMLButtonElement[], byId: (id: string) => HTMLElement, prefs: ViewPrefs, onShow: (name: string) => void): void {
  const show = (name: string): void => {
    for (const t of tabs) {
      const on = t.dataset.tab === name;
      t.setAttribute('aria-selected', String(on));
      t.tabIndex = on ? 0 : -1;
      byId(`panel-${t.dataset.tab}`).hidden = !on;
    }
    prefs.set({ tab: name });
    onShow(name);
  };
  tabs.forEach((t, i) => {
    t.addEventListener('click', () => show(t.dataset.tab ?? 'charts'));
    t.addEventListener('keydown', (e) => {
      const d = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
      if (!d) return;
      const next = tabs[(i + d + tabs.length) % tabs.length];
      next.focus();
      show(next.dataset.tab ?? 'charts');
    });
  });
  show(prefs.saved.tab ?? 'charts');
}
