// Shared pieces of the end-to-end tests: free ports, temp folders, the
// dashboard process, a real Python training process, Chromium.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const EXT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const REPO = resolve(EXT, '..');
export const PYTHON = process.env.ONTHEFLY_TEST_PYTHON ?? join(REPO, '.venv', 'bin', 'python');
export const CHROMIUM = process.env.ONTHEFLY_CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

export async function freePort() {
  const srv = createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/** Temp folders: config (token file), store home, the trainer's working directory. */
export function tempDirs(prefix) {
  const root = mkdtempSync(join(tmpdir(), prefix));
  const dirs = { root, config: join(root, 'config'), home: join(root, 'home'), cwd: join(root, 'cwd') };
  for (const d of [dirs.config, dirs.home, dirs.cwd]) mkdirSync(d, { recursive: true });
  dirs.remove = () => rmSync(root, { recursive: true, force: true });
  return dirs;
}

/** A child process whose output is kept (and echoed with a prefix when OTF_E2E_VERBOSE is set). */
export function start(cmd, args, opts, name) {
  const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
  child.output = '';
  const keep = (d) => {
    child.output += d.toString();
    if (process.env.OTF_E2E_VERBOSE) process.stderr.write(`[${name}] ${d}`);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.exited = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })));
  return child;
}

export async function waitForOutput(child, pattern, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const m = pattern.exec(child.output);
    if (m) return m;
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no ${pattern} in the output of ${child.spawnargs.join(' ')}:\n${child.output}`);
}

/** Start `node dist/dashboard.js` on free ports; resolves with its URL and link port. */
export async function startDashboard(dirs, extraEnv = {}) {
  const linkPort = await freePort();
  const child = start(
    process.execPath,
    [join(EXT, 'dist', 'dashboard.js'), '--port', '0', '--link-port', String(linkPort), '--python', PYTHON],
    { cwd: dirs.cwd, env: { ...process.env, PYTHONPATH: REPO, XDG_CONFIG_HOME: dirs.config, ONTHEFLY_HOME: dirs.home, ...extraEnv } },
    'dashboard',
  );
  const [, url] = await waitForOutput(child, /OnTheFly dashboard: (http:\/\/\S+)/);
  return { child, url, linkPort };
}

/** Start the fixture training script as a real Python process. */
export function startTrainer(dirs, linkPort, env = {}) {
  if (!existsSync(PYTHON)) throw new Error(`no Python at ${PYTHON}: run scripts/setup-env.sh (or set ONTHEFLY_TEST_PYTHON)`);
  return start(
    PYTHON,
    [join(EXT, 'test', 'fixtures', 'train_small.py')],
    {
      cwd: dirs.cwd,
      env: {
        ...process.env,
        PYTHONPATH: REPO,
        ONTHEFLY_DASHBOARD_PORT: String(linkPort),
        XDG_CONFIG_HOME: dirs.config,
        ONTHEFLY_HOME: dirs.home,
        ...env,
      },
    },
    'trainer',
  );
}

export async function stopProcess(child, timeoutMs = 5000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await child.exited;
  clearTimeout(t);
}
