import t from 'tap';
import { buildApp } from '../src/app.ts';
import { MemoryRateLimitStore, RedisRateLimitStore } from '../src/bus/rate-limit-store.ts';
import { type Config, defaultConfig } from '../src/config.ts';
import { familyOf } from '../src/http/rate-limits.ts';
import { startRuntime } from '../src/runtime.ts';
import { databaseBackends, testRedisUrl } from './helpers/backends.ts';
import type { Json } from './helpers/e2ee.ts';
import { type Login, SERVER_NAME, startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
const redisUrl = testRedisUrl();
const [pglite] = databaseBackends();

/** Rules small enough to hit in a test: `perSecond,burst` per family. */
function limited(rules: Partial<Config['rateLimitRules']>, more: Partial<Config> = {}): Partial<Config> {
  return {
    rateLimits: true,
    rateLimitRules: { ...defaultConfig().rateLimitRules, ...rules },
    rateLimitUserFactor: 1,
    rateLimitAddressFactor: 100,
    ...more,
  };
}

t.test('routes map to their families', async (t) => {
  t.equal(familyOf('PUT', `${V3}/rooms/:roomId/send/:eventType/:txnId`), 'send');
  t.equal(familyOf('PUT', `${V3}/rooms/:roomId/state/:eventType/:stateKey`), 'send');
  t.equal(familyOf('PUT', `${V3}/rooms/:roomId/redact/:eventId/:txnId`), 'send');
  t.equal(familyOf('POST', `${V3}/join/:roomIdOrAlias`), 'join');
  t.equal(familyOf('POST', `${V3}/rooms/:roomId/join`), 'join');
  t.equal(familyOf('POST', `${V3}/rooms/:roomId/invite`), 'invite');
  t.equal(familyOf('POST', `${V3}/createRoom`), 'create_room');
  t.equal(familyOf('POST', `${V3}/keys/upload`), 'keys_upload');
  t.equal(familyOf('POST', `${V3}/keys/claim`), 'keys_claim');
  t.equal(familyOf('PUT', `${V3}/sendToDevice/:eventType/:txnId`), 'to_device');
  t.equal(familyOf('GET', '/_matrix/client/v1/media/download/:serverName/:mediaId'), 'media');
  t.equal(familyOf('GET', '/_synapse/admin/v1/users'), 'admin');
  t.equal(familyOf('GET', `${V3}/sync`), 'client');
});

t.test('memory buckets: burst, refill, all or nothing, reset', async (t) => {
  let now = 1_000_000;
  const store = new MemoryRateLimitStore(() => now);
  const rule = { perSecond: 2, burst: 3 };
  for (let i = 0; i < 3; i++) t.equal(await store.take(['a'], [rule], 1), 0, `burst ${i}`);
  t.equal(await store.take(['a'], [rule], 1), 500, 'empty: one token in 500 ms');
  now += 250;
  t.equal(await store.take(['a'], [rule], 1), 250);
  now += 250;
  t.equal(await store.take(['a'], [rule], 1), 0, 'refilled');
  t.ok((await store.take(['b', 'a'], [rule, rule], 1)) > 0, 'a is empty, so b is not taken from either');
  t.equal(await store.take(['b'], [rule], 0), 0);
  now += 10_000;
  t.equal(await store.take(['a'], [rule], 0), 0, 'peeking takes nothing');
  await store.reset(['a']);
  t.equal(await store.take(['a'], [rule], 1), 0);
});

t.test('per-family limits on a server (PGlite, memory buckets)', async (t) => {
  const s = await startTestServer(t, pglite!, {
    ...limited(
      { send: { perSecond: 0.01, burst: 3 }, create_room: { perSecond: 0.01, burst: 2 } },
      { rateLimitExemptUsers: [`@trusted:${SERVER_NAME}`] },
    ),
  });
  const alice = await s.register('alice');
  const bob = await s.register('bob');
  const trusted = await s.register('trusted');
  const root = await s.registerAdmin('root');
  const req = (who: Login, method: 'PUT' | 'POST', path: string, body: unknown = {}) =>
    s.request(method, `${V3}${path}`, { token: who.access_token, body });
  const roomId: string = (await req(alice, 'POST', '/createRoom', { preset: 'public_chat' })).json().room_id;
  for (const who of [bob, trusted, root]) await req(who, 'POST', `/join/${enc(roomId)}`);
  let txn = 0;
  const send = (who: Login) =>
    req(who, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/t${txn++}`, { body: 'hi' });

  for (let i = 0; i < 3; i++) t.equal((await send(alice)).statusCode, 200, `send ${i} within the burst`);
  const refused = await send(alice);
  t.equal(refused.statusCode, 429);
  t.equal(refused.json().errcode, 'M_LIMIT_EXCEEDED');
  t.ok(refused.json().retry_after_ms > 0 && refused.json().retry_after_ms <= 100_000, refused.body);
  t.equal(refused.headers['retry-after'], String(Math.ceil(refused.json().retry_after_ms / 1000)));
  t.equal((await send(bob)).statusCode, 200, 'another user has buckets of his own');
  t.equal((await req(alice, 'POST', '/createRoom')).statusCode, 200, 'another family has buckets of its own');
  t.equal((await req(alice, 'POST', '/createRoom')).statusCode, 429, 'and its own limit');
  for (let i = 0; i < 6; i++) {
    t.equal((await send(trusted)).statusCode, 200, `configured exempt user, send ${i}`);
    t.equal((await send(root)).statusCode, 200, `server admin, send ${i}`);
  }
  // A new device of alice has a bucket of its own, but alice's user bucket is empty too.
  const second = await s.login('alice');
  t.equal((await send(second)).statusCode, 429, "the user's bucket binds every device");
  // Nothing stored for the refused sends.
  const messages = await s.request('GET', `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=100`, {
    token: bob.access_token,
  });
  const fromAlice = messages
    .json()
    .chunk.filter((e: Json) => e.type === 'm.room.message' && e.sender === alice.user_id);
  t.equal(fromAlice.length, 3);
});

t.test('the address bucket binds every user behind one address', async (t) => {
  const s = await startTestServer(
    t,
    pglite!,
    limited({ join: { perSecond: 0.01, burst: 2 } }, { rateLimitAddressFactor: 1, rateLimitUserFactor: 5 }),
  );
  const users = [await s.register('alice'), await s.register('bob'), await s.register('carol')];
  const roomIds: string[] = [];
  for (let i = 0; i < 3; i++) {
    roomIds.push(
      (
        await s.request('POST', `${V3}/createRoom`, {
          token: users[0]!.access_token,
          body: { preset: 'public_chat' },
        })
      ).json().room_id,
    );
  }
  const join = (who: Login, roomId: string, address: string) =>
    s.app.inject({
      method: 'POST',
      url: `${V3}/join/${enc(roomId)}`,
      headers: { authorization: `Bearer ${who.access_token}`, 'content-type': 'application/json' },
      payload: '{}',
      remoteAddress: address,
    });
  t.equal((await join(users[1]!, roomIds[0]!, '192.0.2.1')).statusCode, 200);
  t.equal((await join(users[2]!, roomIds[0]!, '192.0.2.1')).statusCode, 200);
  t.equal((await join(users[1]!, roomIds[1]!, '192.0.2.1')).statusCode, 429, 'a third join from the address');
  t.equal(
    (await join(users[1]!, roomIds[1]!, '192.0.2.2')).statusCode,
    200,
    'the same user from another address',
  );
});

t.test('limits off: nothing is refused', async (t) => {
  const s = await startTestServer(t, pglite!, {
    ...limited({ create_room: { perSecond: 0.01, burst: 1 } }),
    rateLimits: false,
  });
  const alice = await s.register('alice');
  for (let i = 0; i < 3; i++) {
    t.equal(
      (await s.request('POST', `${V3}/createRoom`, { token: alice.access_token, body: {} })).statusCode,
      200,
    );
  }
});

t.test('a refused request may be retried after retry_after_ms', async (t) => {
  // One request a second: slow enough that a loaded machine does not refill the bucket between
  // two requests in a row, fast enough to retry within the test.
  const s = await startTestServer(t, pglite!, limited({ keys_claim: { perSecond: 1, burst: 1 } }));
  const alice = await s.register('alice');
  const claim = () =>
    s.request('POST', `${V3}/keys/claim`, { token: alice.access_token, body: { one_time_keys: {} } });
  t.equal((await claim()).statusCode, 200);
  const refused = await claim();
  t.equal(refused.statusCode, 429);
  const retry = refused.json().retry_after_ms as number;
  t.ok(retry > 0 && retry <= 1000, `retry after ${retry} ms`);
  const started = Date.now();
  let res = await claim();
  while (res.statusCode === 429) {
    await new Promise((r) => setTimeout(r, res.json().retry_after_ms));
    res = await claim();
  }
  t.equal(res.statusCode, 200);
  t.ok(Date.now() - started < 10_000, 'within a few retry_after_ms');
});

t.test(
  'Redis buckets are atomic across connections',
  { skip: redisUrl ? false : 'needs TEST_REDIS_URL' },
  async (t) => {
    const a = await RedisRateLimitStore.connect(redisUrl!);
    const b = await RedisRateLimitStore.connect(redisUrl!);
    t.teardown(async () => {
      await a.close();
      await b.close();
    });
    const key = `conclave.test.rl.${process.pid}.${Date.now()}`;
    const rule = { perSecond: 0.001, burst: 20 };
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) => (i % 2 ? a : b).take([key, `${key}.other`], [rule, rule], 1)),
    );
    t.equal(
      results.filter((r) => r === 0).length,
      20,
      'exactly the burst is granted, whichever connection asks',
    );
    t.ok(
      results.every((r) => r === 0 || r > 1000),
      'the others learn how long to wait',
    );
    await a.reset([key]);
    t.equal(await b.take([key], [rule], 1), 0, 'a reset on one is seen by the other');
  },
);

t.test(
  'two server instances share their buckets through Redis',
  { skip: redisUrl && databaseBackends()[1] ? false : 'needs TEST_DATABASE_URL and TEST_REDIS_URL' },
  async (t) => {
    const overrides = { ...limited({ send: { perSecond: 0.01, burst: 4 } }), redisUrl: redisUrl! };
    const one = await startTestServer(t, databaseBackends()[1]!, overrides);
    const runtime = await startRuntime({ ...one.config } as Config);
    const app = await buildApp(runtime.services);
    t.teardown(async () => {
      await app.close();
      await runtime.close();
    });
    t.equal(runtime.services.rateLimits.storeKind, 'redis');
    const alice = await one.register('alice');
    const roomId: string = (
      await one.request('POST', `${V3}/createRoom`, { token: alice.access_token, body: {} })
    ).json().room_id;
    const send = (i: number) => {
      const url = `${V3}/rooms/${enc(roomId)}/send/m.room.message/x${i}`;
      const opts = {
        method: 'PUT' as const,
        url,
        headers: { authorization: `Bearer ${alice.access_token}`, 'content-type': 'application/json' },
        payload: '{"body":"hi"}',
      };
      return (i % 2 ? app.inject(opts) : one.app.inject(opts)).then((r) => r.statusCode);
    };
    const statuses = await Promise.all(Array.from({ length: 8 }, (_, i) => send(i)));
    t.equal(statuses.filter((s) => s === 200).length, 4, `one burst over both instances: ${statuses}`);
    t.equal(statuses.filter((s) => s === 429).length, 4);
  },
);
