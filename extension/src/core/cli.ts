/**
 * The `onthefly` command, run by the dashboard to export a session to a zip
 * (`onthefly export SESSION -o FILE.zip`) and to load one
 * (`onthefly serve FILE.zip`, which connects back like a training process,
 * read-only). Which Python runs it is decided by {@link choosePython}.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PORT_ENV } from '../protocol/spec';
import type { Logger } from './interfaces';

export const CLI_MODULE = 'onthefly.cli.main';

/**
 * The interpreter to run: the setting when given, else the first workspace
 * folder's `.venv`, else `python3` (`python` on Windows). Pure but for the
 * existence checks it is handed.
 */
export function choosePython(setting: string | undefined, folders: readonly string[], exists: (p: string) => boolean, platform: string): string {
  if (setting && setting.trim()) return setting.trim();
  const rel = platform === 'win32' ? path.join('.venv', 'Scripts', 'python.exe') : path.join('.venv', 'bin', 'python');
  for (const f of folders) {
    const candidate = path.join(f, rel);
    if (exists(candidate)) return candidate;
  }
  return platform === 'win32' ? 'python' : 'python3';
}

export interface CliResult {
  ok: boolean;
  message: string;
  path?: string;
}

/** The last non-empty line of a command's error output, which the CLI makes the readable one. */
export function lastLine(text: string): string {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  return lines[lines.length - 1] ?? '';
}

function failure(python: string, args: string[], code: number | string | null, stderr: string): string {
  const why = lastLine(stderr) || `exit code ${String(code)}`;
  if (code === 'ENOENT') {
    return `cannot run ${python}: no such program; set onthefly.pythonPath to a Python with onthefly-ai installed`;
  }
  if (/No module named ['"]?onthefly/.test(stderr)) {
    return `${python} has no onthefly-ai installed (${why}): pip install onthefly-ai there, or set onthefly.pythonPath`;
  }
  return `\`onthefly ${args.join(' ')}\` failed: ${why}`;
}

/** Export `session` to `file` (a .zip); resolves with a sentence for the user. */
export function exportSession(python: string, session: string, file: string, cwd: string | undefined, env: NodeJS.ProcessEnv): Promise<CliResult> {
  const args = ['export', session, '-o', file];
  return new Promise((resolve) => {
    execFile(python, ['-m', CLI_MODULE, ...args], { cwd, env, timeout: 10 * 60_000, maxBuffer: 8 << 20 }, (err, _stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code ?? (err as { code?: number }).code ?? null;
        resolve({ ok: false, message: failure(python, args, code as number | string | null, String(stderr)) });
        return;
      }
      const size = fs.existsSync(file) ? fs.statSync(file).size : 0;
      resolve({ ok: true, message: `session ${session} exported to ${file} (${(size / 1e6).toFixed(1)} MB)`, path: file });
    });
  });
}

/**
 * Start `onthefly serve FILE` connected to the dashboard on `port`. Resolves
 * once the process has run for `settleMs` without failing (it then shows up as
 * a read-only session), or with its error.
 */
export function serveSession(
  python: string,
  file: string,
  port: number,
  cwd: string | undefined,
  env: NodeJS.ProcessEnv,
  logger: Logger,
  onStarted: (child: ChildProcess) => void,
  settleMs = 3000,
): Promise<CliResult> {
  const args = ['serve', file];
  return new Promise((resolve) => {
    let settled = false;
    let stderr = '';
    const child = spawn(python, ['-m', CLI_MODULE, ...args], { cwd, env: { ...env, [PORT_ENV]: String(port) }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (d: Buffer) => logger.info(`[serve] ${d.toString().trimEnd()}`));
    child.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-8192);
      logger.warn(`[serve] ${d.toString().trimEnd()}`);
    });
    const finish = (r: CliResult) => {
      if (!settled) {
        settled = true;
        resolve(r);
      }
    };
    child.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, message: failure(python, args, e.code ?? null, e.message) }));
    child.on('exit', (code) => finish({ ok: false, message: failure(python, args, code, stderr) }));
    setTimeout(() => {
      if (settled) return;
      onStarted(child);
      finish({ ok: true, message: `loading ${file}: it appears in the session list as a read-only session`, path: file });
    }, settleMs);
  });
}
