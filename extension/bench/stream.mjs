// Streaming benchmark of the dashboard: a trainer sending 100 steps/s (batched
// every 0.1 s, as the Python link does) to `npm run dashboard` in Chromium.
// Prints one line: latency from a step to its drawn point, frames per second
// of the page and chart draws per second while streaming, and the CPU of the
// dashboard's host process (the same core as the VS Code extension host)
// while idle and while streaming.
//
//   npm run build && node bench/stream.mjs [--seconds 10]
import { cpuSeconds, ensureBuilt, fakeTrainerClass, openPage, quantile, readToken, sleep, startDashboard, stopProcess, tempDirs } from './common.mjs';

const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1]) || 10;
const RATE = 100; // steps per second
const BATCH_MS = 100;

ensureBuilt();
const dirs = tempDirs('otf-bench-');
const dash = await startDashboard(dirs);
const { browser, page, errors } = await openPage(dash.url);
const FakeTrainer = fakeTrainerClass();
let step = 0;
const trainer = new FakeTrainer({
  port: dash.linkPort,
  token: readToken(dirs, dash.linkPort),
  session: 'bench',
  handlers: {
    status: () => ({ state: 'running', step, epoch: 0, session: 'bench', run: 'run-1', project: 'bench', pid: process.pid }),
    query: (p) => (/count\(\*\) AS n/.test(p.sql) ? { columns: ['n', 'lo', 'hi'], rows: [[0, null, null]], truncated: false } : { columns: [], rows: [], truncated: false }),
    report: () => {
      throw new Error('no pass has finished yet');
    },
  },
});
await trainer.welcomed;
trainer.notify('run', { id: 'run-1', name: 'bench', kind: 'base', status: 'running', parents: [] });
trainer.notify('state', { state: 'running', step: 0, epoch: 0, run: 'run-1' });
await page.locator('[data-testid=status][data-status=connected]').waitFor({ timeout: 20_000 });
await sleep(1000);

// Page-side probes: when each point was drawn, frames, longest frame.
await page.evaluate(() => {
  const w = window;
  w.__drawn = [];
  w.__frames = 0;
  w.__longest = 0;
  const box = document.querySelector('[data-testid=loss-chart]');
  new MutationObserver(() => w.__drawn.push([Number(box.dataset.lastX), Date.now()])).observe(box, { attributes: true, attributeFilter: ['data-last-x'] });
  let last = performance.now();
  const frame = (t) => {
    w.__frames++;
    w.__longest = Math.max(w.__longest, t - last);
    last = t;
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  w.__resetFrames = () => {
    w.__frames = 0;
    w.__longest = 0;
  };
});

// Idle: connected, nothing streaming.
const idle0 = cpuSeconds(dash.child.pid);
await sleep(seconds * 1000);
const idleCpu = (cpuSeconds(dash.child.pid) - idle0) / seconds;

// Streaming.
const stepTime = new Map();
const sendTime = new Map();
await page.evaluate(() => window.__resetFrames());
const t0 = Date.now();
const busy0 = cpuSeconds(dash.child.pid);
let pending = [];
const total = RATE * seconds;
const stepTimer = setInterval(() => {
  const due = Math.min(total, Math.floor(((Date.now() - t0) * RATE) / 1000));
  while (step < due) {
    step++;
    stepTime.set(step, Date.now());
    pending.push(step);
  }
}, 2);
const batchTimer = setInterval(() => {
  if (!pending.length) return;
  const now = Date.now();
  for (const s of pending) sendTime.set(s, now);
  trainer.notify('steps', {
    step: pending,
    loss: pending.map((s) => 1 / Math.sqrt(s) + Math.random() * 0.05),
    lr: pending.map(() => 1e-3),
    grad_norm: pending.map(() => Math.random()),
    samples_per_s: pending.map(() => 3200),
    rss_mb: pending.map(() => 512),
  });
  pending = [];
}, BATCH_MS);
await sleep(seconds * 1000 + 300);
clearInterval(stepTimer);
clearInterval(batchTimer);
const busyCpu = (cpuSeconds(dash.child.pid) - busy0) / ((Date.now() - t0) / 1000);
await sleep(500);
const probe = await page.evaluate(() => ({ drawn: window.__drawn, frames: window.__frames, longest: window.__longest }));
const elapsed = (Date.now() - t0) / 1000;

// Each step's drawn time: the first draw whose last point reached it.
const fromStep = [];
const fromSend = [];
let d = 0;
const drawn = probe.drawn.filter(([x]) => Number.isFinite(x));
for (let s = 1; s <= step; s++) {
  while (d < drawn.length && drawn[d][0] < s) d++;
  if (d >= drawn.length) break;
  fromStep.push(drawn[d][1] - stepTime.get(s));
  fromSend.push(drawn[d][1] - sendTime.get(s));
}
const draws = drawn.length;
const ms = (v) => `${v.toFixed(0)} ms`;
console.log(
  `stream ${RATE} steps/s for ${seconds} s: step→drawn p50 ${ms(quantile(fromStep, 0.5))} p95 ${ms(quantile(fromStep, 0.95))} ` +
    `(send→drawn p50 ${ms(quantile(fromSend, 0.5))} p95 ${ms(quantile(fromSend, 0.95))}; batching adds ≤${BATCH_MS} ms) · ` +
    `page ${(probe.frames / elapsed).toFixed(0)} fps, ${(draws / elapsed).toFixed(1)} chart draws/s, longest frame ${ms(probe.longest)} · ` +
    `host CPU idle ${(idleCpu * 100).toFixed(1)}% streaming ${(busyCpu * 100).toFixed(1)}% of a core · ${fromStep.length}/${step} steps drawn` +
    (errors.length ? ` · PAGE ERRORS: ${errors.join('; ')}` : ''),
);
trainer.close();
await browser.close();
await stopProcess(dash.child);
dirs.remove();
