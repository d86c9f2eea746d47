// Runs every dashboard benchmark in turn: `npm run bench`.
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
for (const b of ['stream.mjs', 'first-render.mjs']) execFileSync(process.execPath, [join(here, b)], { stdio: 'inherit' });
