// Helpers of the dashboard benchmarks: a built extension, the browser-mode
// dashboard, Chromium, a fake trainer over the real protocol, CPU of a process.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, EXT } from '../test/e2e/harness.mjs';

export * from '../test/e2e/harness.mjs';

/** Build the dashboard and compile the test support once. */
export function ensureBuilt() {
  if (!existsSync(join(EXT, 'dist', 'dashboard.js'))) execFileSync('npm', ['run', 'build'], { cwd: EXT, stdio: 'inherit' });
  if (!existsSync(join(EXT, 'out', 'test', 'support', 'fakeTrainer.js'))) execFileSync('npx', ['tsc', '-p', 'tsconfig.test.json'], { cwd: EXT, stdio: 'inherit' });
}

/** The fake trainer class (a real TCP client of the protocol), from the compiled test support. */
export function fakeTrainerClass() {
  const require = createRequire(import.meta.url);
  return require(join(EXT, 'out', 'test', 'support', 'fakeTrainer.js')).FakeTrainer;
}

export function readToken(dirs, linkPort) {
  return readFileSync(join(dirs.config, 'onthefly', `dashboard-${linkPort}.token`), 'utf8').trim();
}

export async function openPage(url, viewport = { width: 1280, height: 860 }) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const page = await browser.newPage({ viewport });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  return { browser, page, errors };
}

/** CPU seconds (user + system) a process has used, from /proc. */
export function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime
  return ticks / 100; // USER_HZ
}

export function quantile(values, q) {
  const s = [...values].sort((a, b) => a - b);
  if (!s.length) return Number.NaN;
  return s[Math.min(s.length - 1, Math.floor(q * (s.length - 1) + 0.5))];
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
