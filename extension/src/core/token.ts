/**
 * The dashboard's token file: 32 random bytes, hex, mode 0600, written when the
 * dashboard starts listening and removed when it stops (only if it still holds
 * this dashboard's token, so a newer dashboard's file is left alone).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { newToken } from '../protocol/handshake';

/**
 * Write a fresh token to `file` atomically (temp file with mode 0600, then rename).
 *
 * @returns the token (64 hex digits).
 */
export function writeTokenFile(file: string): string {
  const token = newToken();
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, token + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
  return token;
}

/** Read a token file; undefined when it is missing. */
export function readTokenFile(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Remove `file` if it still holds `token`. */
export function removeTokenFile(file: string, token: string): void {
  try {
    if (readTokenFile(file) === token) fs.unlinkSync(file);
  } catch {
    // already gone or unreadable: nothing of ours to remove
  }
}
