/**
 * Where the token file lives: `<config>/onthefly/dashboard-<port>.token`, with
 * `<config>` = `$XDG_CONFIG_HOME` or `~/.config` (`%APPDATA%` on Windows).
 * Pure functions of the environment they are given (mirrors `onthefly/paths.py`).
 */
import * as path from 'node:path';
import { DEFAULT_PORT, PORT_ENV } from '../protocol/spec';

export interface PathEnv {
  env: Record<string, string | undefined>;
  platform: string;
  home: string;
}

/** The user's config folder. */
export function configRoot({ env, platform, home }: PathEnv): string {
  if (platform === 'win32' && env.APPDATA) return env.APPDATA;
  if (env.XDG_CONFIG_HOME) return env.XDG_CONFIG_HOME;
  return path.join(home, '.config');
}

/** The token file of the dashboard listening on `port`. */
export function tokenPath(pathEnv: PathEnv, port: number): string {
  return path.join(configRoot(pathEnv), 'onthefly', `dashboard-${port}.token`);
}

/**
 * The port to listen on: `ONTHEFLY_DASHBOARD_PORT` when set, else the given
 * setting, else 47621.
 *
 * @throws Error naming the bad value when it is no TCP port.
 */
export function resolvePort(env: Record<string, string | undefined>, setting?: number | null): number {
  const raw = env[PORT_ENV];
  const port = raw !== undefined && raw !== '' ? Number(raw) : (setting ?? DEFAULT_PORT);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    const where = raw !== undefined && raw !== '' ? `${PORT_ENV}=${raw}` : `onthefly.port=${String(setting)}`;
    throw new Error(`${where} is not a TCP port: use a whole number from 1 to 65535`);
  }
  return port;
}
