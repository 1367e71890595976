/**
 * Database queries per operation on the embedded default (in-memory PGlite), through the HTTP
 * app (fastify inject, no network): one message send, and one incremental /sync of a member
 * who receives it. On PGlite every query runs on the server's one thread, so what a message
 * costs to deliver grows with (queries per sync) x (recipients):
 *
 *   node --import tsx bench/queries.ts [--list]
 *
 * Prints the count per operation and, with --list, each statement (its first 120 characters).
 */
import { buildApp } from '../src/app.ts';
import { startBenchRuntime } from './common.ts';

const list = process.argv.includes('--list');
const RUNS = 21;
const runtime = await startBenchRuntime();
const app = await buildApp(runtime.services, { federation: runtime.federation });
const pglite = runtime.database.pglite;
if (!pglite) throw new Error('expected the embedded database');

let recorded: Array<{ sql: string; ms: number }> | undefined;
for (const method of ['query', 'exec'] as const) {
  const original = pglite[method].bind(pglite) as (...args: unknown[]) => Promise<unknown>;
  (pglite as unknown as Record<string, unknown>)[method] = async (...args: unknown[]) => {
    const start = performance.now();
    try {
      return await original(...args);
    } finally {
      recorded?.push({
        sql: String(args[0]).replace(/\s+/g, ' ').slice(0, 120),
        ms: performance.now() - start,
      });
    }
  };
}

async function call(method: 'GET' | 'POST' | 'PUT', url: string, token?: string, body?: unknown) {
  const res = await app.inject({
    method,
    url,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
  });
  if (res.statusCode !== 200) throw new Error(`${method} ${url}: ${res.statusCode} ${res.body}`);
  // biome-ignore lint/suspicious/noExplicitAny: a loose client for the benchmark
  return res.json() as Record<string, any>;
}

async function measure<T>(label: string, fn: (i: number) => Promise<T>): Promise<T> {
  // The median of several runs: one run on a busy machine says little.
  const runs: Array<{ total: number; statements: Array<{ sql: string; ms: number }> }> = [];
  let result: T | undefined;
  for (let i = 0; i < RUNS; i++) {
    recorded = [];
    const start = performance.now();
    result = await fn(i);
    runs.push({ total: performance.now() - start, statements: recorded });
    recorded = undefined;
  }
  runs.sort((a, b) => a.total - b.total);
  const median = runs[Math.floor(runs.length / 2)]!;
  const dbMs = median.statements.reduce((sum, s) => sum + s.ms, 0);
  console.log(
    `${label}: ${median.statements.length} queries, ${median.total.toFixed(2)} ms in all, ${dbMs.toFixed(2)} ms in the database (median of ${RUNS})`,
  );
  if (list) for (const s of median.statements) console.log(`    ${s.ms.toFixed(2).padStart(6)} ms  ${s.sql}`);
  return result as T;
}

const V3 = '/_matrix/client/v3';
const register = (username: string) =>
  call('POST', `${V3}/register`, undefined, {
    username,
    password: 'bench password 123',
    auth: { type: 'm.login.dummy' },
  });
const alice = await register('alice');
const bob = await register('bob');
const { room_id: roomId } = await call('POST', `${V3}/createRoom`, alice.access_token, {
  preset: 'public_chat',
});
await call('POST', `${V3}/join/${encodeURIComponent(roomId)}`, bob.access_token, {});
const filter = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 1000 } } }));
let since = (await call('GET', `${V3}/sync?filter=${filter}`, bob.access_token)).next_batch as string;
// Warm the caches the way a running server has them: a few rounds of send and sync.
for (let i = 0; i < 5; i++) {
  await call(
    'PUT',
    `${V3}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/w${i}`,
    alice.access_token,
    {
      msgtype: 'm.text',
      body: `warm ${i}`,
    },
  );
  since = (await call('GET', `${V3}/sync?since=${since}&timeout=0&filter=${filter}`, bob.access_token))
    .next_batch as string;
}
const send = (i: number) =>
  call('PUT', `${V3}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/m${i}`, alice.access_token, {
    msgtype: 'm.text',
    body: `measured ${i}`,
  });
await measure('one send (PUT /send)', send);
// Each measured sync starts from the token before one more message.
const tokens: string[] = [];
for (let i = 0; i < RUNS; i++) {
  tokens.push(
    (await call('GET', `${V3}/sync?since=${since}&timeout=0&filter=${filter}`, bob.access_token)).next_batch,
  );
  since = tokens[i]!;
  await send(RUNS + i);
}
await measure("the recipient's incremental /sync that returns it", (i) =>
  call('GET', `${V3}/sync?since=${tokens[i]}&timeout=0&filter=${filter}`, bob.access_token),
);
await app.close();
await runtime.close();
