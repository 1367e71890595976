import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { databaseBackends, testRedisUrl } from './helpers/backends.ts';
import { statusUrl, syncUntilPresence } from './helpers/presence.ts';
import { type RunningProcess, startServerProcess } from './helpers/process.ts';
import { type Login, syncOnce, type TestServer } from './helpers/server.ts';

// Both backends on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;

/** Two server processes of one homeserver on one PostgreSQL and one Redis. */
const postgres = databaseBackends().find((b) => b.name === 'postgres');
const redisUrl = testRedisUrl();

t.test(
  'presence set through one process reaches a sync on another',
  { skip: !postgres || !redisUrl ? 'needs TEST_DATABASE_URL and TEST_REDIS_URL' : false },
  async (t) => {
    t.setTimeout(120_000);
    const db = await postgres!.create();
    t.teardown(() => db.drop());
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conclave-presence-'));
    t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
    const env = {
      CONCLAVE_BIND_ADDRESS: '127.0.0.1',
      CONCLAVE_PORT: '0',
      CONCLAVE_SERVER_NAME: 'multi.test',
      CONCLAVE_DATABASE_URL: db.url,
      CONCLAVE_REDIS_URL: redisUrl!,
      CONCLAVE_REGISTRATION: 'open',
      CONCLAVE_PASSWORD_HASH_COST: '10',
      CONCLAVE_RATE_LIMITS: 'off',
      CONCLAVE_DATA_DIR: dataDir,
    };
    const start = async (): Promise<{ proc: RunningProcess; base: string }> => {
      const started = await startServerProcess(env);
      t.teardown(() => started.proc.stop());
      return started;
    };
    const p1 = await start();
    const p2 = await start();
    const via = (base: string): Pick<TestServer, 'request'> => ({
      request: async (method, url, opts = {}) => {
        const res = await fetch(`${base}${url}`, {
          method,
          headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {},
          ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
        });
        const text = await res.text();
        return { statusCode: res.status, body: text, json: () => JSON.parse(text) } as never;
      },
    });
    const s1 = via(p1.base);
    const s2 = via(p2.base);
    const register = async (s: Pick<TestServer, 'request'>, username: string) =>
      (
        await s.request('POST', `${V3}/register`, {
          body: { username, password: 'a long enough password', auth: { type: 'm.login.dummy' } },
        })
      ).json() as Login;
    const alice = await register(s1, 'alice');
    const bob = await register(s2, 'bob');
    const room = await s1.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: { preset: 'public_chat', invite: [bob.user_id] },
    });
    const roomId = room.json().room_id as string;
    await s2.request('POST', `${V3}/join/${enc(roomId)}`, { token: bob.access_token, body: {} });
    const mark = (await syncOnce(s2, bob, { set_presence: 'offline' })).next_batch as string;
    const waiting = syncUntilPresence(s2, bob, mark, alice.user_id, (c) => c.status_msg === 'from p1');
    const sent = Date.now();
    await s1.request('PUT', statusUrl(alice.user_id), {
      token: alice.access_token,
      body: { presence: 'online', status_msg: 'from p1' },
    });
    await waiting;
    t.ok(Date.now() - sent < 5000, `seen on the other process after ${Date.now() - sent} ms`);
    // The other process's memory of alice follows: a sync there with unavailable changes it.
    const back = syncUntilPresence(s1, alice, mark, alice.user_id, (c) => c.presence === 'unavailable');
    await syncOnce(s2, alice, { set_presence: 'unavailable' });
    await back;
    t.pass('a change on p2 reaches a sync on p1');
  },
);
