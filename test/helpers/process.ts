import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface RunningProcess {
  child: ChildProcess;
  /** Everything written so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves with the first stdout line matching, rejects when the process exits first. */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(): Promise<number | null>;
  exited: Promise<number | null>;
}

/** Runs one of our TypeScript entry points (src/server.ts, src/admin.ts) as a real process. */
export function runScript(
  script: string,
  args: string[],
  env: Record<string, string>,
  nodeArgs: string[] = [],
): RunningProcess {
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', path.join(ROOT, script), ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  // Complete stdout lines not yet shown to the waiters, and the waiters still waiting. Each line
  // is looked at once: a server's log grows for as long as it runs, and searching all of it on
  // every chunk made this process drain the pipe slower than the server wrote, which blocked the
  // server in its synchronous writes to stdout (a pipe) and slowed whatever was measured.
  let partial = '';
  const waiters = new Set<(line: string) => boolean>();
  child.stdout?.on('data', (d: Buffer) => {
    const text = d.toString();
    out += text;
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    if (waiters.size === 0) return;
    for (const line of lines) for (const w of waiters) if (w(line)) waiters.delete(w);
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitForLine(re, timeoutMs = 90_000) {
      return new Promise((resolve, reject) => {
        // Complete lines only: the last piece may be a line still being written.
        const earlier = out
          .split('\n')
          .slice(0, -1)
          .find((l) => re.test(l));
        if (earlier !== undefined) {
          resolve(earlier);
          return;
        }
        const waiter = (line: string) => {
          if (!re.test(line)) return false;
          clearTimeout(timer);
          resolve(line);
          return true;
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`timed out waiting for ${re}; stderr: ${err}`));
        }, timeoutMs);
        waiters.add(waiter);
        void exited.then((code) => {
          if (!waiters.delete(waiter)) return;
          clearTimeout(timer);
          reject(new Error(`process exited (${code}) before ${re}; stderr: ${err}`));
        });
      });
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

/** Starts a server process (src/server.ts) and resolves once it listens, with its base URL. */
export async function startServerProcess(
  env: Record<string, string>,
  nodeArgs: string[] = [],
  timeoutMs = 120_000,
): Promise<{ proc: RunningProcess; base: string }> {
  // The detectors are tested on their own; a process started by a test or bench leaves them off
  // unless it asks for them (CONCLAVE_DETECTION=on), as startTestServer does.
  const proc = runScript(
    'src/server.ts',
    [],
    { CONCLAVE_LOG_LEVEL: 'info', CONCLAVE_DETECTION: 'off', ...env },
    nodeArgs,
  );
  try {
    const line = await proc.waitForLine(/listening on http:\/\/127\.0\.0\.1:(\d+)/, timeoutMs);
    return { proc, base: `http://127.0.0.1:${/:(\d+) \|/.exec(line)![1]}` };
  } catch (err) {
    await proc.stop();
    throw err;
  }
}
