/**
 * matrix-nio (Python) as a second, independent end-to-end encryption implementation for tests:
 * test/nio/nio_client.py run by the Python of a virtual environment kept outside the repository.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const NIO_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'nio');
export const NIO_SCRIPT = join(NIO_DIR, 'nio_client.py');
const REQUIREMENTS = join(NIO_DIR, 'requirements.txt');

/** The system Python used to make the environment. */
const SYSTEM_PYTHON = process.env.NIO_SYSTEM_PYTHON ?? 'python3';

/** Why the system cannot make the environment (no Python 3, or no venv module), or undefined. */
export async function pythonUnavailable(): Promise<string | undefined> {
  try {
    await run(SYSTEM_PYTHON, ['-c', 'import venv, ensurepip']);
    return undefined;
  } catch {
    return `${SYSTEM_PYTHON} with the venv module is not available (Debian: apt-get install python3 python3-venv)`;
  }
}

/**
 * The Python of a virtual environment with test/nio/requirements.txt installed, in the system's
 * temporary directory, named after a hash of the requirements (so a change of them makes a new
 * one). Made on first use: `python3 -m venv`, then `pip install -r requirements.txt`, in a
 * temporary folder renamed into place only once complete. Returns how long the making took (0 if
 * it existed).
 */
export async function nioPython(): Promise<{ python: string; installMs: number }> {
  const requirements = await readFile(REQUIREMENTS);
  const hash = createHash('sha256').update(requirements).digest('hex').slice(0, 12);
  const dir = join(tmpdir(), `conclave-nio-${hash}`);
  const python = join(dir, 'bin', 'python');
  if (existsSync(python)) return { python, installMs: 0 };

  const started = performance.now();
  const building = `${dir}.building-${process.pid}`;
  await rm(building, { recursive: true, force: true });
  try {
    await run(SYSTEM_PYTHON, ['-m', 'venv', building]);
    await run(
      join(building, 'bin', 'python'),
      ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '-r', REQUIREMENTS],
      { maxBuffer: 16 * 1024 * 1024 },
    );
    try {
      await rename(building, dir);
    } catch (err) {
      // Another process finished first: use its environment.
      if (!existsSync(python)) throw err;
    }
  } finally {
    await rm(building, { recursive: true, force: true });
  }
  return { python, installMs: performance.now() - started };
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
