/** Colours from the VS Code theme (CSS variables), with fallbacks for browser mode; see styles.css. */
export function cssVar(name: string, fallback: string): string {
  const v = getComputedStyle(document.body).getPropertyValue(name).trim();
  return v || fallback;
}

export function palette(): { fg: string; grid: string; series: string[] } {
  return {
    fg: cssVar('--otf-fg', '#555'),
    grid: cssVar('--otf-grid', 'rgba(128,128,128,0.2)'),
    series: [1, 2, 3, 4, 5, 6].map((i) => cssVar(`--otf-series-${i}`, ['#3794ff', '#f14c4c', '#cca700', '#89d185', '#b180d7', '#d18616'][i - 1])),
  };
}
