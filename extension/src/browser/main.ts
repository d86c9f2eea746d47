/**
 * `npm run dashboard`: the dashboard in a browser tab, for people who do not
 * use VS Code and for tests.
 *
 *   node dist/dashboard.js [--port HTTP_PORT] [--link-port PORT] [--python PATH]
 *
 * --port: the page's port (default 47680; 0 picks a free one). --link-port:
 * where training processes connect (default ONTHEFLY_DASHBOARD_PORT, else
 * 47621). --python: the interpreter for export/load (default: ./.venv, then
 * python3).
 */
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { choosePython, exportSession, serveSession } from '../core/cli';
import { DashboardCore } from '../core/hub';
import type { Logger } from '../core/interfaces';
import { resolvePort } from '../core/paths';
import type { HostActions } from '../core/viewLink';
import { TOKEN_ENV } from '../protocol/spec';
import { BrowserServer } from './server';

export const DEFAULT_HTTP_PORT = 47680;

export interface Args {
  port: number;
  linkPort?: number;
  python?: string;
  quiet: boolean;
}

/** Parse the command line. @throws Error naming the bad flag. */
export function parseArgs(argv: readonly string[]): Args {
  const args: Args = { port: DEFAULT_HTTP_PORT, quiet: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    const port = (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${flag} ${v} is not a TCP port: use 0 to 65535`);
      return n;
    };
    if (flag === '--port') args.port = port(value());
    else if (flag === '--link-port') args.linkPort = port(value());
    else if (flag === '--python') args.python = value();
    else if (flag === '--quiet') args.quiet = true;
    else if (flag === '--help' || flag === '-h') throw new Error('usage: npm run dashboard -- [--port HTTP_PORT] [--link-port PORT] [--python PATH]');
    else throw new Error(`unknown option ${a}: see --help`);
  }
  return args;
}

function consoleLogger(quiet: boolean): Logger {
  const line = (level: string) => (m: string) => {
    if (!quiet || level === 'error') process.stderr.write(`[onthefly] ${level === 'info' ? '' : `${level}: `}${m}\n`);
  };
  return { debug: () => {}, info: line('info'), warn: line('warning'), error: line('error') };
}

async function main(): Promise<void> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(2);
  }
  const logger = consoleLogger(args.quiet);
  const linkPort = args.linkPort ?? resolvePort(process.env);
  const core = new DashboardCore({
    port: linkPort,
    pathEnv: { env: process.env, platform: process.platform, home: os.homedir() },
    logger,
    token: process.env[TOKEN_ENV] || undefined,
  });
  const cwd = process.cwd();
  const python = () => choosePython(args.python ?? process.env.ONTHEFLY_PYTHON, [cwd, path.resolve(cwd, '..')], fs.existsSync, process.platform);
  const served: ChildProcess[] = [];
  const actions: HostActions = {
    saveFile: async () => ({ ok: false, message: 'the browser saves files itself' }),
    exportSession: async (session, file) => {
      if (!file) return { ok: false, message: 'give a .zip path to export to' };
      return exportSession(python(), session, path.resolve(cwd, file), cwd, process.env);
    },
    loadSession: async (file) => {
      if (!file) return { ok: false, message: 'give the path of an exported session (.zip)' };
      return serveSession(python(), path.resolve(cwd, file), core.port, cwd, process.env, logger, (c) => served.push(c));
    },
  };
  const server = new BrowserServer({
    core,
    actions,
    logger,
    assets: path.join(__dirname, 'webview'),
    port: args.port,
    version: readVersion(),
  });
  try {
    await core.start();
    const url = await server.start();
    process.stdout.write(`OnTheFly dashboard: ${url}\n`);
    process.stdout.write(`training processes connect to tcp://127.0.0.1:${linkPort}\n`);
  } catch (e) {
    process.stderr.write(`[onthefly] ${(e as Error).message}\n`);
    await core.stop();
    process.exit(1);
  }
  const stop = async () => {
    server.dispose();
    for (const c of served) c.kill();
    await core.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}

function readVersion(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '';
  }
}

if (require.main === module) void main();
