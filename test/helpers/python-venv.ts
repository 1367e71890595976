/**
 * Python virtual environments for tests that drive Python programs (matrix-nio, Synapse): made
 * from PyPI with the system's Python, kept outside the repository between runs.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The system Python used to make the environments. */
const SYSTEM_PYTHON = process.env.NIO_SYSTEM_PYTHON ?? 'python3';

/** Why the system cannot make an environment (no Python 3, or no venv module), or undefined. */
export async function pythonUnavailable(): Promise<string | undefined> {
  try {
    await run(SYSTEM_PYTHON, ['-c', 'import venv, ensurepip']);
    return undefined;
  } catch {
    return `${SYSTEM_PYTHON} with the venv module is not available (Debian: apt-get install python3 python3-venv)`;
  }
}

/**
 * The Python of a virtual environment with `requirements` installed, in the system's temporary
 * directory, named `conclave-<label>-<hash of the requirements>` (so a change of them makes a new
 * one). Made on first use: `python3 -m venv`, then `pip install -r`, in a temporary folder renamed
 * into place only once complete. Returns how long the making took (0 if it existed).
 */
export async function pythonVenv(
  label: string,
  requirements: string,
): Promise<{ python: string; installMs: number }> {
  const hash = createHash('sha256')
    .update(await readFile(requirements))
    .digest('hex')
    .slice(0, 12);
  const dir = join(tmpdir(), `conclave-${label}-${hash}`);
  const python = join(dir, 'bin', 'python');
  if (existsSync(python)) return { python, installMs: 0 };

  const started = performance.now();
  const building = `${dir}.building-${process.pid}`;
  await rm(building, { recursive: true, force: true });
  try {
    await run(SYSTEM_PYTHON, ['-m', 'venv', building]);
    await run(
      join(building, 'bin', 'python'),
      ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '-r', requirements],
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
