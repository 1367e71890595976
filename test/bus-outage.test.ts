import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import t from 'tap';
import { buildApp } from '../src/app.ts';
import { startRuntime } from '../src/runtime.ts';
import { databaseBackends } from './helpers/backends.ts';
import type { Json } from './helpers/e2ee.ts';
import { type Login, startTestServer } from './helpers/server.ts';

/**
 * Two server instances on one PostgreSQL and a Redis of this test's own (started on a free
 * loopback port and stopped and restarted here; the shared Redis is never touched).
 */
const V3 = '/_matrix/client/v3';
const postgres = databaseBackends()[1];

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('Ready to accept connections')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`redis-server exited (${code}): ${out}`)));
  });
}

async function stopRedis(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** Polls `check` every 50 ms until it holds or `ms` pass. */
async function until(check: () => boolean | Promise<boolean>, ms = 15_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

t.test(
  'with the bus down, processes keep serving and stay safe',
  { skip: postgres ? false : 'needs TEST_DATABASE_URL (two instances share one database)' },
  async (t) => {
    const port = await freePort();
    let redis = await startRedis(port);
    t.teardown(() => stopRedis(redis));
    const one = await startTestServer(t, postgres!, { redisUrl: `redis://127.0.0.1:${port}` });
    const runtime = await startRuntime({ ...one.config });
    const twoApp = await buildApp(runtime.services);
    t.teardown(async () => {
      await twoApp.close();
      await runtime.close();
    });
    const on = (
      app: 'one' | 'two',
      method: 'GET' | 'POST' | 'PUT',
      url: string,
      who?: Login,
      body?: unknown,
    ) =>
      (app === 'one' ? one.app : twoApp).inject({
        method,
        url,
        headers: {
          ...(who ? { authorization: `Bearer ${who.access_token}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
      });
    const buses = [one.runtime.services.bus, runtime.services.bus];

    const alice = await one.register('alice');
    const bob = await one.register('bob');
    const roomId: string = (
      await on('one', 'POST', `${V3}/createRoom`, alice, { preset: 'public_chat' })
    ).json().room_id;
    t.equal((await on('two', 'POST', `${V3}/join/${encodeURIComponent(roomId)}`, bob, {})).statusCode, 200);
    const aliceTwo = await one.login('alice');
    t.equal((await on('two', 'GET', `${V3}/account/whoami`, aliceTwo)).statusCode, 200, 'cached on two');
    const since: string = (await on('two', 'GET', `${V3}/sync`, bob)).json().next_batch;

    await stopRedis(redis);
    t.ok(await until(() => buses.every((b) => !b.healthy())), 'both instances see the bus down');

    // bob long-polls on two while alice sends on one.
    const syncUrl = (from: string) => `${V3}/sync?since=${from}&timeout=20000`;
    const started = Date.now();
    const polled = on('two', 'GET', syncUrl(since), bob);
    const sent = await on(
      'one',
      'PUT',
      `${V3}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t1`,
      alice,
      {
        body: 'during the outage',
      },
    );
    t.equal(sent.statusCode, 200, 'a stored send answers 200');
    const sync = (await polled).json();
    const events = sync.rooms?.join?.[roomId]?.timeline?.events ?? [];
    t.ok(
      events.some((e: Json) => e.event_id === sent.json().event_id),
      `bob, on the other instance, sees it (after ${Date.now() - started} ms)`,
    );
    t.ok(Date.now() - started < 10_000, 'within a few seconds');

    t.equal((await on('one', 'POST', `${V3}/logout`, aliceTwo, {})).statusCode, 200, 'a logout answers');
    const whoami = await on('two', 'GET', `${V3}/account/whoami`, aliceTwo);
    t.equal(whoami.statusCode, 401, 'the other instance, which was not told, refuses the token');
    t.equal(whoami.json().errcode, 'M_UNKNOWN_TOKEN');

    redis = await startRedis(port);
    t.ok(await until(() => buses.every((b) => b.healthy())), 'both instances see the bus back');
    let next: string = sync.next_batch;
    const after = await on(
      'one',
      'PUT',
      `${V3}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t2`,
      alice,
      {
        body: 'after the outage',
      },
    );
    t.equal(after.statusCode, 200);
    // As a client would: sync until it arrives (a sync may return first for another change).
    let seen = false;
    const deadline = Date.now() + 10_000;
    while (!seen && Date.now() < deadline) {
      const body = (await on('two', 'GET', syncUrl(next), bob)).json();
      seen = (body.rooms?.join?.[roomId]?.timeline?.events ?? []).some(
        (e: Json) => e.event_id === after.json().event_id,
      );
      next = body.next_batch;
    }
    t.ok(seen, 'what is sent once the bus is back arrives too');
    t.equal(
      (await on('two', 'GET', `${V3}/account/whoami`, aliceTwo)).statusCode,
      401,
      'the token stays dead',
    );
  },
);
