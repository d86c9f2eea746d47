// End-to-end: the browser mode (`npm run dashboard`) in Debian's Chromium,
// driven by playwright-core, against a REAL Python training process.
//
//   node --test test/e2e/browser.e2e.mjs      (after `npm run build`)
//
// Screenshots of the running, paused and per-sample views go to
// $ONTHEFLY_SCREENSHOTS when set (`npm run screenshots` writes docs/images/),
// else to the test's temporary folder.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, startDashboard, startTrainer, stopProcess, tempDirs } from './harness.mjs';

const IMAGES_ENV = process.env.ONTHEFLY_SCREENSHOTS;
const T = 30_000;

let dirs, dash, trainer, browser, page, IMAGES;
const pageErrors = [];

before(async () => {
  dirs = tempDirs('otf-e2e-');
  IMAGES = IMAGES_ENV ? resolve(IMAGES_ENV) : join(dirs.root, 'images');
  dash = await startDashboard(dirs);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => m.type() === 'error' && pageErrors.push(m.text()));
  await page.goto(dash.url);
});

after(async () => {
  await browser?.close();
  await stopProcess(trainer);
  await stopProcess(dash?.child);
  if (process.env.OTF_E2E_KEEP) console.log(`kept ${dirs.root}`);
  else dirs?.remove();
});

const tid = (id) => page.getByTestId(id);
const stepValue = async () => Number(await tid('step').getAttribute('data-value'));

test('the page waits for a training process', async () => {
  await assert.doesNotReject(tid('status').filter({ hasText: 'waiting for a training process' }).waitFor({ timeout: T }));
  assert.equal(await tid('pause').isDisabled(), true);
  assert.match(await tid('pause').getAttribute('title'), /No training process is connected/);
});

test('a real training process connects and the loss chart receives points', async () => {
  trainer = startTrainer(dirs, dash.linkPort, { OTF_EPOCHS: '400', OTF_SAMPLE_SLEEP: '0.0005' });
  await page.locator('[data-testid=status][data-status=connected]').waitFor({ timeout: T });
  await page.waitForFunction(() => Number(document.querySelector('[data-testid=loss-chart]')?.getAttribute('data-points')) > 5, null, { timeout: T });
  await page.locator('[data-testid=state][data-state=running]').waitFor({ timeout: T });
  assert.match(trainer.output, /dashboard connected on tcp:\/\/127\.0\.0\.1:/);
  mkdirSync(IMAGES, { recursive: true });
  await page.waitForFunction(() => Number(document.querySelector('[data-testid=loss-chart]')?.getAttribute('data-points')) > 60, null, { timeout: T });
  await page.screenshot({ path: join(IMAGES, 'dashboard-running.png') });
});

test('pause stops the steps; resume starts them again', async () => {
  await tid('pause').click();
  await page.locator('[data-testid=state][data-state=paused]').waitFor({ timeout: T });
  assert.equal(await tid('pause').isDisabled(), true);
  assert.equal(await tid('resume').isEnabled(), true);
  // the link sends `state` ahead of queued step rows: let the last batch land
  await page.waitForTimeout(400);
  const at = await stepValue();
  const points = await tid('loss-chart').getAttribute('data-last-x');
  await page.waitForTimeout(1200);
  assert.equal(await stepValue(), at, 'the step does not advance while paused');
  assert.equal(await tid('loss-chart').getAttribute('data-last-x'), points, 'no new points while paused');
  await page.screenshot({ path: join(IMAGES, 'dashboard-paused.png') });
  await tid('resume').click();
  await page.locator('[data-testid=state][data-state=running]').waitFor({ timeout: T });
  await page.waitForFunction((s) => Number(document.querySelector('[data-testid=step]')?.getAttribute('data-value')) > s, at, { timeout: T });
});

test('test now shows a test loss', async () => {
  await tid('test').click();
  await page.waitForFunction(() => /loss \d/.test(document.querySelector('[data-testid=test-result]')?.textContent ?? ''), null, { timeout: T });
  const loss = Number(await tid('test-result').getAttribute('data-loss'));
  assert.ok(Number.isFinite(loss) && loss > 0, `a finite test loss, got ${loss}`);
});

test('the histogram and the hardest samples fill after an epoch', async () => {
  await tid('tab-samples').click();
  await page.waitForFunction(() => Number(document.querySelector('[data-testid=sample-histogram]')?.getAttribute('data-bins')) > 0, null, { timeout: T });
  // a few epochs, so the quantile bands and the sparklines have a history
  await page.waitForFunction(() => Number(document.querySelector('[data-testid=hardest-table]')?.getAttribute('data-epoch')) >= 3, null, { timeout: T });
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=hardest-table] tbody tr').length > 0, null, { timeout: T });
  const rows = await page.locator('[data-testid=hardest-table] tbody tr').count();
  assert.ok(rows >= 5, `hardest samples listed, got ${rows}`);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=hardest-table] td.spark canvas').length > 0, null, { timeout: T });
  assert.equal(Number(await tid('sample-histogram').getAttribute('data-count')), 1024, 'a train pass holds every sample');
  assert.equal(await tid('sample-histogram').getAttribute('data-source'), 'epoch', "drawn from the pass's epoch summary");
});

test('a loss range is counted, saved as a slice and exported', async () => {
  // drag on the histogram: the right half of the plot
  const over = page.locator('[data-testid=sample-histogram] .u-over');
  const box = await over.boundingBox();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.99, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(() => /samples in range/.test(document.querySelector('[data-testid=range-count]')?.textContent ?? ''), null, { timeout: T });
  const inRange = Number(await tid('range-count').getAttribute('data-count'));
  assert.ok(inRange > 0 && inRange < 1024, `the range holds some samples, got ${inRange}`);
  await tid('slice-name').fill('hard-tail');
  await tid('slice-save').click();
  await page.waitForFunction(() => /Slice 'hard-tail' saved/.test(document.querySelector('[data-testid=slice-result]')?.textContent ?? ''), null, { timeout: T });
  await tid('slice-format').selectOption('csv');
  await tid('slice-export').click();
  await page.waitForFunction(() => /Exported \d+ rows/.test(document.querySelector('[data-testid=slice-result]')?.textContent ?? ''), null, { timeout: T });
  const file = await tid('slice-result').getAttribute('data-path');
  assert.ok(existsSync(file) && statSync(file).size > 0, `the export wrote ${file}`);
  assert.ok(file.startsWith(dirs.cwd), 'inside the training process working directory');
  await page.screenshot({ path: join(IMAGES, 'dashboard-samples.png') });
});

test('runs, lineage and logs are shown', async () => {
  await tid('tab-runs').click();
  await page.locator('[data-testid=runs] button').first().waitFor({ timeout: T });
  await page.locator('[data-testid=lineage] svg .node').first().waitFor({ timeout: T });
  await tid('tab-logs').click();
  await tid('log-level').selectOption('debug');
  await tid('tab-charts').click();
});

test('everything is reachable by keyboard', async () => {
  await page.locator('body').focus();
  const reached = new Set();
  for (let i = 0; i < 40; i++) {
    await page.keyboard.press('Tab');
    const id = await page.evaluate(() => document.activeElement?.getAttribute('data-testid'));
    if (id) reached.add(id);
  }
  for (const id of ['stop', 'test', 'checkpoint', 'export-session', 'load-session', 'tab-charts', 'loss-chart']) assert.ok(reached.has(id), `Tab reaches ${id}`);
});

test('stop finishes the run', async () => {
  await tid('stop').click();
  await page.waitForFunction(() => ['finished', ''].includes(document.querySelector('[data-testid=state]')?.getAttribute('data-state') ?? 'x') || /disconnected/.test(document.querySelector('[data-testid=status]')?.textContent ?? ''), null, { timeout: T });
  await trainer.exited;
});

test('export session writes a bundle, and load session serves it back read-only', async () => {
  const zip = join(dirs.cwd, 'exported.zip');
  page.once('dialog', (d) => d.accept(zip));
  await tid('export-session').click();
  await page.waitForFunction(() => /exported to|failed/.test(document.querySelector('[data-testid=notice]')?.textContent ?? ''), null, { timeout: T });
  assert.match(await tid('notice').textContent(), /exported to/);
  assert.ok(existsSync(zip) && statSync(zip).size > 0, 'the bundle exists');
  page.once('dialog', (d) => d.accept(zip));
  await tid('load-session').click();
  await page.waitForFunction(() => /loading .*read-only|failed/.test(document.querySelector('[data-testid=notice]')?.textContent ?? ''), null, { timeout: T });
  assert.match(await tid('notice').textContent(), /read-only session/);
  await page.locator('[data-testid=status]', { hasText: 'loaded (read-only)' }).waitFor({ timeout: T });
  assert.match(await tid('pause').getAttribute('title'), /read-only/);
});

test('the page showed no errors', () => {
  assert.deepEqual(pageErrors, []);
});
