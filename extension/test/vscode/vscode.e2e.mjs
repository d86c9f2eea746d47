// End-to-end in the real VS Code workbench: code-server (from npm, on
// Node 24) in Debian's Chromium, driven by playwright-core. Installs the
// packaged .vsix, runs "OnTheFly: Show Dashboard" from the command palette,
// starts a REAL Python training process and checks, inside the webview
// frame, that it connects and shows steps.
//
//   bash test/vscode/setup.sh && npm run package && node --test test/vscode/vscode.e2e.mjs
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, EXT, freePort, start, startTrainer, stopProcess, tempDirs, waitForOutput } from '../e2e/harness.mjs';

const HERE = join(EXT, 'test', 'vscode');
const NODE24 = join(HERE, 'node24', 'node_modules', '.bin', 'node');
const CODE_SERVER = join(HERE, 'node_modules', 'code-server', 'out', 'node', 'entry.js');
const VSIX = join(EXT, 'dist', 'onthefly.vsix');
const T = 60_000;

let dirs, server, trainer, browser, page, linkPort;

before(async () => {
  for (const [what, file, fix] of [
    ['Node 24', NODE24, 'bash test/vscode/setup.sh'],
    ['code-server', CODE_SERVER, 'bash test/vscode/setup.sh'],
    ['the packaged extension', VSIX, 'npm run package'],
  ]) {
    if (!existsSync(file)) throw new Error(`${what} is missing (${file}): run ${fix}`);
  }
  dirs = tempDirs('otf-vscode-');
  const data = join(dirs.root, 'user-data');
  const exts = join(dirs.root, 'extensions');
  mkdirSync(join(data, 'User'), { recursive: true });
  linkPort = await freePort();
  writeFileSync(
    join(data, 'User', 'settings.json'),
    JSON.stringify({
      'security.workspace.trust.enabled': false,
      'workbench.startupEditor': 'none',
      'workbench.tips.enabled': false,
      'telemetry.telemetryLevel': 'off',
      'extensions.autoUpdate': false,
      'extensions.autoCheckUpdates': false,
      'update.mode': 'none',
      'onthefly.port': linkPort,
    }),
  );
  const env = { ...process.env, XDG_CONFIG_HOME: dirs.config, HOME: dirs.root };
  const common = ['--user-data-dir', data, '--extensions-dir', exts];
  execFileSync(NODE24, [CODE_SERVER, ...common, '--install-extension', VSIX], { env, stdio: 'pipe' });
  const port = await freePort();
  server = start(
    NODE24,
    [CODE_SERVER, ...common, '--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust', dirs.cwd],
    { env, cwd: dirs.cwd },
    'code-server',
  );
  await waitForOutput(server, /HTTP server listening on/, T);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(dirs.cwd)}`);
  await page.locator('.monaco-workbench').waitFor({ timeout: T });
});

after(async () => {
  await browser?.close();
  await stopProcess(trainer);
  await stopProcess(server);
  if (process.env.OTF_E2E_KEEP) console.log(`kept ${dirs?.root}`);
  else dirs?.remove();
});

/** The frame of our webview: the one that holds the session bar. */
async function dashboardFrame(timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const f of page.frames()) {
      try {
        if (await f.locator('[data-testid=status]').count()) return f;
      } catch {
        // a frame that went away meanwhile
      }
    }
    await page.waitForTimeout(250);
  }
  throw new Error('no webview frame with the dashboard appeared');
}

async function runCommand(title) {
  // Extension commands show up in the palette only once the workbench has read
  // the installed extensions: reopen the palette until the command is listed.
  const deadline = Date.now() + T;
  for (;;) {
    await page.locator('.monaco-workbench').click({ position: { x: 700, y: 400 } }).catch(() => {});
    await page.keyboard.press('F1');
    const input = page.locator('.quick-input-widget input');
    await input.waitFor({ timeout: T });
    await input.fill(`>${title}`);
    const option = page.locator(`.quick-input-widget [role=option][aria-label="${title}"]`).first();
    try {
      await option.waitFor({ timeout: 3000 });
      await option.click();
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await page.keyboard.press('Escape');
    }
  }
}

test('the command palette opens the dashboard, which waits for a trainer', async () => {
  await runCommand('OnTheFly: Show Dashboard');
  const frame = await dashboardFrame(T);
  await frame.locator('[data-testid=status]', { hasText: `waiting for a training process on port ${linkPort}` }).waitFor({ timeout: T });
  await page.locator('.statusbar-item', { hasText: 'OnTheFly: waiting' }).first().waitFor({ timeout: T });
});

test('a real training process connects and its steps show in the webview', async () => {
  trainer = startTrainer(dirs, linkPort, { OTF_EPOCHS: '400', OTF_SAMPLE_SLEEP: '0.0005' });
  const frame = await dashboardFrame(T);
  await frame.locator('[data-testid=status][data-status=connected]').waitFor({ timeout: T });
  await frame.waitForFunction(() => Number(document.querySelector('[data-testid=step]')?.getAttribute('data-value')) > 0, null, { timeout: T });
  await frame.waitForFunction(() => Number(document.querySelector('[data-testid=loss-chart]')?.getAttribute('data-points')) > 5, null, { timeout: T });
  await page.locator('.statusbar-item', { hasText: /OnTheFly: running · step \d+/ }).first().waitFor({ timeout: T });
  assert.match(trainer.output, /dashboard connected on tcp:\/\/127\.0\.0\.1:/);
  if (process.env.ONTHEFLY_SCREENSHOTS) await page.screenshot({ path: join(process.env.ONTHEFLY_SCREENSHOTS, 'vscode-dashboard.png') });
});

test('pause from the webview pauses the trainer', async () => {
  const frame = await dashboardFrame(T);
  await frame.getByTestId('pause').click();
  await frame.locator('[data-testid=state][data-state=paused]').waitFor({ timeout: T });
  await page.locator('.statusbar-item', { hasText: 'OnTheFly: paused' }).first().waitFor({ timeout: T });
  await frame.getByTestId('stop').click();
  await frame.locator('[data-testid=state][data-state=finished]').waitFor({ timeout: T });
});
