// Run by `npm start`: builds the web client when web/dist is missing (npm ci builds it already,
// through the root package's prepare script), so that the server always has a client to serve.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const index = new URL('../dist/index.html', import.meta.url);
if (!existsSync(index)) {
  process.stderr.write('conclave: building the web client (web/dist is missing)\n');
  const r = spawnSync('npm', ['run', 'build', '-w', 'web'], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
