/** A dashboard core on a free port with its token file in a temporary config folder. */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CoreEvent } from '../../src/core/hub';
import { DashboardCore } from '../../src/core/hub';
import type { Logger } from '../../src/core/interfaces';

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

export interface Harness {
  core: DashboardCore;
  port: number;
  config: string;
  events: CoreEvent[];
  logs: string[];
  token(): string;
  close(): Promise<void>;
}

export async function startCore(opts: { handshakeTimeoutMs?: number; maxLineBytes?: number } = {}): Promise<Harness> {
  const config = fs.mkdtempSync(path.join(os.tmpdir(), 'otf-core-'));
  const port = await freePort();
  const logs: string[] = [];
  const logger: Logger = {
    debug: (m) => logs.push(`debug ${m}`),
    info: (m) => logs.push(`info ${m}`),
    warn: (m) => logs.push(`warn ${m}`),
    error: (m) => logs.push(`error ${m}`),
  };
  const core = new DashboardCore({
    port,
    pathEnv: { env: { XDG_CONFIG_HOME: config }, platform: 'linux', home: config },
    logger,
    ...opts,
  });
  await core.start();
  const events: CoreEvent[] = [];
  core.events.subscribe((e) => events.push(e));
  return {
    core,
    port,
    config,
    events,
    logs,
    token: () => fs.readFileSync(core.tokenFile, 'utf8').trim(),
    close: async () => {
      await core.stop();
      fs.rmSync(config, { recursive: true, force: true });
    },
  };
}
