// First render of a stored run of 1,000,000 steps: a real session store
// (written by the store's own writer), served with `onthefly serve`, opened in
// `npm run dashboard` in Chromium. Prints one line: the time from page load
// to the loss chart drawn with the whole run (downsampled by DuckDB to the
// extremes of 4000 buckets), median of 3 loads, against the 1 s target.
//
//   npm run build && node bench/first-render.mjs [--steps 1000000]
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { EXT, PYTHON, REPO, ensureBuilt, openPage, quantile, start, startDashboard, stopProcess, tempDirs, waitForOutput } from './common.mjs';

const steps = Number(process.argv[process.argv.indexOf('--steps') + 1]) || 1_000_000;
ensureBuilt();
const dirs = tempDirs('otf-bench-1m-');
const env = { ...process.env, PYTHONPATH: REPO, ONTHEFLY_HOME: dirs.home, XDG_CONFIG_HOME: dirs.config };
const session = execFileSync(PYTHON, [join(EXT, 'bench', 'make_store.py'), dirs.home, String(steps)], { env }).toString().trim();
const dash = await startDashboard(dirs);
const served = start(PYTHON, ['-m', 'onthefly.cli.main', 'serve', session], { env: { ...env, ONTHEFLY_DASHBOARD_PORT: String(dash.linkPort) }, cwd: dirs.cwd }, 'serve');
await waitForOutput(served, /serving session/, 60_000);
const { browser, page, errors } = await openPage(dash.url);
await page.locator('[data-testid=status][data-status=connected]').waitFor({ timeout: 60_000 });

const times = [];
const connected = [];
let points = 0;
for (let i = 0; i < 3; i++) {
  const t0 = Date.now();
  await page.reload();
  await page.locator('[data-testid=status][data-status=connected]').waitFor({ timeout: 60_000 });
  connected.push(Date.now() - t0);
  await page.waitForFunction(
    (n) => document.querySelector('#charts')?.dataset.historySteps === String(n) && Number(document.querySelector('[data-testid=loss-chart]')?.dataset.points) > 0,
    steps,
    { timeout: 60_000, polling: 'raf' },
  );
  times.push(Date.now() - t0);
  points = Number(await page.getAttribute('[data-testid=loss-chart]', 'data-points'));
}
const median = quantile(times, 0.5);
console.log(
  `first render of a stored run of ${steps.toLocaleString('en')} steps: ${median} ms from page load to drawn (median of 3: ${times.join(', ')} ms; ` +
    `page up and session listed after ${quantile(connected, 0.5)} ms; ` +
    `${points} points drawn; target < 1000 ms: ${median < 1000 ? 'met' : 'missed'})` + (errors.length ? ` · PAGE ERRORS: ${errors.join('; ')}` : ''),
);
await browser.close();
await stopProcess(served);
await stopProcess(dash.child);
dirs.remove();
