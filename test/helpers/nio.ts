/**
 * matrix-nio (Python) as a second, independent end-to-end encryption implementation for tests:
 * test/nio/nio_client.py run by the Python of a virtual environment kept outside the repository.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pythonVenv } from './python-venv.ts';

export { pythonUnavailable } from './python-venv.ts';

const NIO_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'nio');
export const NIO_SCRIPT = join(NIO_DIR, 'nio_client.py');
const REQUIREMENTS = join(NIO_DIR, 'requirements.txt');

/**
 * The Python of a virtual environment with test/nio/requirements.txt installed (see pythonVenv),
 * and how long making it took (0 if it existed).
 */
export function nioPython(): Promise<{ python: string; installMs: number }> {
  return pythonVenv('nio', REQUIREMENTS);
}

/** A line printed by nio_client.py. */
export interface NioLine {
  event: string;
  [field: string]: unknown;
}

/** A running nio_client.py: its JSON lines as they come, and its end. */
export interface NioProcess {
  lines: NioLine[];
  /** Resolves with the exit code (or the signal's name) and the last lines of stderr. */
  exited: Promise<{ code: number | string; stderrTail: string }>;
  kill(): void;
}

export function startNio(opts: {
  python: string;
  homeserver: string;
  userId: string;
  password: string;
  roomId: string;
  send: string;
  expect: number;
  timeoutSeconds: number;
}): NioProcess {
  const child = spawn(
    opts.python,
    [
      NIO_SCRIPT,
      '--homeserver',
      opts.homeserver,
      '--user',
      opts.userId,
      '--room',
      opts.roomId,
      '--send',
      opts.send,
      '--expect',
      String(opts.expect),
      '--timeout',
      String(opts.timeoutSeconds),
    ],
    { env: { ...process.env, NIO_PASSWORD: opts.password }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const lines: NioLine[] = [];
  let pending = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    pending += chunk;
    let newline = pending.indexOf('\n');
    while (newline >= 0) {
      const line = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      if (line) {
        try {
          lines.push(JSON.parse(line) as NioLine);
        } catch {
          lines.push({ event: 'unparsed' });
        }
      }
      newline = pending.indexOf('\n');
    }
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const exited = new Promise<{ code: number | string; stderrTail: string }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code: code ?? signal ?? 'unknown', stderrTail: stderr }));
    child.on('error', (err) => resolve({ code: `spawn failed: ${err.message}`, stderrTail: stderr }));
  });
  return {
    lines,
    exited,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    },
  };
}
