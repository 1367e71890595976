/** Pieces shared by the benchmarks: a loose HTTP client, server processes, CPU and percentiles. */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { defaultConfig } from '../src/config.ts';
import { type Runtime, startRuntime } from '../src/runtime.ts';
import { type RunningProcess, startServerProcess } from '../test/helpers/process.ts';

/**
 * Services in this process (no HTTP server) on in-memory PGlite, or on PostgreSQL at the URL,
 * with settings for measuring: open registration, a cheap password hash, no request limits and
 * no detectors.
 */
export function startBenchRuntime(databaseUrl?: string): Promise<Runtime> {
  return startRuntime(
    {
      ...defaultConfig(),
      serverName: 'bench.test',
      registration: 'open',
      passwordHashCost: 10,
      rateLimits: false,
      // As for the server processes the benches start: the detectors are measured on their own.
      detection: false,
      dataDir: '',
      logLevel: 'silent',
      webClient: '',
      ...(databaseUrl ? { databaseUrl } : {}),
    },
    { pgliteInMemory: true },
  );
}

export async function api(base: string, method: string, url: string, token?: string, body?: unknown) {
  const res = await fetch(`${base}${url}`, {
    method,
    headers: token ? { authorization: `Bearer ${token}` } : {},
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  // biome-ignore lint/suspicious/noExplicitAny: a loose client for the benchmark
  const json = (await res.json()) as Record<string, any>;
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

export async function startServers(
  mode: 'embedded' | 'postgres',
  extraEnv: Record<string, string> = {},
): Promise<{ bases: string[]; pids: number[]; stop(): Promise<void> }> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conclave-bench-'));
  const env: Record<string, string> = {
    CONCLAVE_BIND_ADDRESS: '127.0.0.1',
    CONCLAVE_PORT: '0',
    CONCLAVE_SERVER_NAME: 'bench.test',
    CONCLAVE_REGISTRATION: 'open',
    CONCLAVE_REGISTRATIONS_PER_WINDOW: '100000',
    CONCLAVE_PASSWORD_HASH_COST: '10',
    CONCLAVE_DATA_DIR: dataDir,
    CONCLAVE_LOG_LEVEL: 'info',
    ...extraEnv,
  };
  let dropDb = async () => {};
  let count = 1;
  if (mode === 'postgres') {
    const adminUrl = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL;
    const redisUrl = process.env.BENCH_REDIS_URL ?? process.env.TEST_REDIS_URL;
    if (!adminUrl || !redisUrl)
      throw new Error('postgres mode needs BENCH_/TEST_DATABASE_URL and BENCH_/TEST_REDIS_URL');
    const name = `conclave_bench_${randomBytes(4).toString('hex')}`;
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    await admin.query(`create database ${name}`);
    await admin.end();
    const url = new URL(adminUrl);
    url.pathname = `/${name}`;
    env.CONCLAVE_DATABASE_URL = url.toString();
    env.CONCLAVE_REDIS_URL = redisUrl;
    count = 2;
    dropDb = async () => {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    };
  }
  const procs: RunningProcess[] = [];
  const bases: string[] = [];
  for (let i = 0; i < count; i++) {
    // e.g. BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the servers.
    const nodeArgs = process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
    const { proc, base } = await startServerProcess(env, nodeArgs);
    procs.push(proc);
    bases.push(base);
  }
  return {
    bases,
    pids: procs.map((p) => p.child.pid ?? 0),
    async stop() {
      for (const p of procs) await p.stop();
      await dropDb();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux); NaN elsewhere. */
export function cpuSecondsOf(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}
