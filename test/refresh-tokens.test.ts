import './helpers/sdk-node.ts';
import type { AddressInfo } from 'node:net';
import { createClient } from 'matrix-js-sdk';
import { logger as sdkGlobalLogger } from 'matrix-js-sdk/lib/logger.js';
import t from 'tap';
import { buildApp } from '../src/app.ts';
import { startRuntime } from '../src/runtime.ts';
import { databaseBackends, testRedisUrl } from './helpers/backends.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { until } from './helpers/wait.ts';

// Both backends on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);
(sdkGlobalLogger as unknown as { setLevel(level: string): void }).setLevel('warn');

const V3 = '/_matrix/client/v3';
const HOUR = 3_600_000;
// biome-ignore lint/suspicious/noExplicitAny: response bodies are read loosely in tests
type Json = Record<string, any>;

const loginBody = (user: string, extra: Json = {}) => ({
  type: 'm.login.password',
  identifier: { type: 'm.id.user', user },
  password: PASSWORD,
  ...extra,
});

async function whoami(s: TestServer, token: string) {
  return s.request('GET', `${V3}/account/whoami`, { token });
}

async function setLocked(s: TestServer, userId: string, locked: boolean) {
  await s.runtime.services.db.updateTable('users').set({ locked }).where('user_id', '=', userId).execute();
}

async function refresh(s: TestServer, refreshToken: unknown) {
  return s.request('POST', `${V3}/refresh`, { body: { refresh_token: refreshToken } });
}

/**
 * Refresh tokens: alice's client asks for one at registration and at login and trades it for new
 * tokens; an old refresh token works until the new tokens are used, then never again; mallory
 * tries tokens that are not hers or not tokens at all. A client that does not ask keeps a token
 * that does not expire.
 */
for (const backend of databaseBackends()) {
  t.test(`refresh tokens on ${backend.name}`, async (t) => {
    t.setTimeout(180_000);
    const logged: string[] = [];
    const s = await startTestServer(
      t,
      backend,
      { accessTokenLifetimeMs: HOUR },
      { logStream: { write: (line) => logged.push(line) } },
    );

    // Registration with refresh_token: true gets both, and the lifetime configured.
    const reg = await s.request('POST', `${V3}/register`, {
      body: { username: 'alice', password: PASSWORD, auth: { type: 'm.login.dummy' }, refresh_token: true },
    });
    t.equal(reg.statusCode, 200);
    const registered = reg.json() as Json;
    t.match(registered.refresh_token, /^cvr_/);
    t.equal(registered.expires_in_ms, HOUR);
    t.equal((await whoami(s, registered.access_token)).json().user_id, registered.user_id);

    // A client that does not ask gets neither, and its token has no expiry.
    const plain = (await s.request('POST', `${V3}/login`, { body: loginBody('alice') })).json() as Json;
    t.equal(plain.refresh_token, undefined);
    t.equal(plain.expires_in_ms, undefined);
    const plainRow = await s.runtime.services.db
      .selectFrom('access_tokens')
      .select('expires_ts')
      .where('device_id', '=', plain.device_id)
      .executeTakeFirstOrThrow();
    t.equal(plainRow.expires_ts, null, 'a token given without a refresh token never expires');

    // Login with refresh_token: true.
    const res = await s.request('POST', `${V3}/login`, { body: loginBody('alice', { refresh_token: true }) });
    t.equal(res.statusCode, 200);
    const first = res.json() as Json;
    t.match(first.refresh_token, /^cvr_/);
    t.equal(first.expires_in_ms, HOUR);
    t.not(first.refresh_token, first.access_token);

    // Only hashes are stored.
    const stored = await s.runtime.services.db.selectFrom('refresh_tokens').select('token_hash').execute();
    t.notOk(
      stored.some((r) => r.token_hash === first.refresh_token),
      'the refresh token itself is not stored',
    );

    // Refresh: new tokens for the same device.
    const r1 = await refresh(s, first.refresh_token);
    t.equal(r1.statusCode, 200);
    const second = r1.json() as Json;
    t.match(second.refresh_token, /^cvr_/);
    t.equal(second.expires_in_ms, HOUR);
    t.not(second.access_token, first.access_token);
    t.not(second.refresh_token, first.refresh_token);

    // The client lost that answer and repeats the refresh: the old refresh token still works
    // (the new tokens were never used), and what the first try gave stops working.
    const r1again = await refresh(s, first.refresh_token);
    t.equal(r1again.statusCode, 200, 'the old refresh token works until the new tokens are used');
    const third = r1again.json() as Json;
    t.equal(
      (await whoami(s, second.access_token)).statusCode,
      401,
      'the unused answer of the repeat is gone',
    );
    t.equal((await refresh(s, second.refresh_token)).statusCode, 401);

    // Using the new access token retires the old refresh token (and its access token).
    const me = await whoami(s, third.access_token);
    t.equal(me.statusCode, 200);
    t.same(me.json(), { user_id: first.user_id, device_id: first.device_id, is_guest: false });
    const reused = await refresh(s, first.refresh_token);
    t.equal(reused.statusCode, 401, 'a reused old refresh token is refused');
    t.equal(reused.json().errcode, 'M_UNKNOWN_TOKEN');
    t.equal(reused.json().soft_logout, false);
    t.equal((await whoami(s, first.access_token)).statusCode, 401, 'the first access token went with it');

    // Using the new refresh token (without using its access token) retires the old one too.
    const fourth = (await refresh(s, third.refresh_token)).json() as Json;
    const fifth = (await refresh(s, fourth.refresh_token)).json() as Json;
    t.equal((await refresh(s, third.refresh_token)).statusCode, 401, 'retired once its successor was used');
    t.equal((await whoami(s, fifth.access_token)).statusCode, 200);

    // Forbidden: tokens that are not refresh tokens, or not ours.
    for (const wrong of ['cvr_not-a-token', fifth.access_token, plain.access_token]) {
      const r = await refresh(s, wrong);
      t.equal(r.statusCode, 401, 'only a live refresh token refreshes');
      t.equal(r.json().errcode, 'M_UNKNOWN_TOKEN');
    }
    // Malformed bodies: 400 with an errcode, never a 500.
    for (const body of [
      {},
      { refresh_token: 7 },
      { refresh_token: '' },
      { refresh_token: 'x'.repeat(600) },
    ]) {
      const r = await s.request('POST', `${V3}/refresh`, { body });
      t.equal(r.statusCode, 400, `malformed: ${JSON.stringify(body).slice(0, 40)}`);
      t.match(r.json().errcode, /^M_/);
    }
    const notJson = await s.request('POST', `${V3}/refresh`, {
      rawBody: '{nope',
      headers: { 'content-type': 'application/json' },
    });
    t.equal(notJson.statusCode, 400);
    t.equal(notJson.json().errcode, 'M_NOT_JSON');

    // A locked account cannot refresh; unlocked, it can.
    await setLocked(s, first.user_id, true);
    const locked = await refresh(s, fifth.refresh_token);
    t.equal(locked.statusCode, 401);
    t.equal(locked.json().errcode, 'M_USER_LOCKED');
    await setLocked(s, first.user_id, false);
    const sixth = (await refresh(s, fifth.refresh_token)).json() as Json;

    // Logging out ends the device's refresh tokens too.
    t.equal((await s.request('POST', `${V3}/logout`, { token: sixth.access_token })).statusCode, 200);
    t.equal((await refresh(s, sixth.refresh_token)).statusCode, 401, 'logout ends the refresh token');
    // Logging in again as the same device ends its earlier refresh tokens.
    const again = (
      await s.request('POST', `${V3}/login`, {
        body: loginBody('alice', { refresh_token: true, device_id: 'LAPTOP' }),
      })
    ).json() as Json;
    await s.request('POST', `${V3}/login`, { body: loginBody('alice', { device_id: 'LAPTOP' }) });
    t.equal((await refresh(s, again.refresh_token)).statusCode, 401, 'a new login as the device ends it');

    // No token reached the log.
    const tokens = [first, second, third, fourth, fifth, sixth, registered].flatMap((x) => [
      x.access_token,
      x.refresh_token,
    ]);
    t.notOk(
      logged.some((line) => tokens.some((tok) => line.includes(tok))),
      'no access or refresh token in the log',
    );
  });

  t.test(`access tokens expire on ${backend.name}`, async (t) => {
    t.setTimeout(120_000);
    const s = await startTestServer(t, backend, { accessTokenLifetimeMs: 1000 });
    const plain = await s.register('bob');
    const res = await s.request('POST', `${V3}/login`, { body: loginBody('bob', { refresh_token: true }) });
    const login = res.json() as Json;
    t.equal(login.expires_in_ms, 1000);
    // The token works until it expires, then gets a soft logout.
    const expired = await until(
      'the access token to expire',
      async () => {
        const r = await whoami(s, login.access_token);
        return r.statusCode === 401 ? r : undefined;
      },
      30_000,
    );
    t.equal(expired.json().errcode, 'M_UNKNOWN_TOKEN');
    t.equal(expired.json().soft_logout, true, 'an expired token is a soft logout');
    // The token of the client that did not ask still works, although it is older.
    t.equal((await whoami(s, plain.access_token)).statusCode, 200, 'tokens without refresh never expire');
    // A refresh brings a working token back.
    const fresh = (await refresh(s, login.refresh_token)).json() as Json;
    const r = await whoami(s, fresh.access_token);
    t.ok(r.statusCode === 200 || r.json().soft_logout === true, 'the new token works (or has just expired)');
  });

  t.test(`refresh tokens expire on ${backend.name}`, async (t) => {
    t.setTimeout(120_000);
    const s = await startTestServer(t, backend, {
      accessTokenLifetimeMs: HOUR,
      refreshTokenLifetimeMs: 3000,
    });
    await s.register('dave');
    const login = (
      await s.request('POST', `${V3}/login`, { body: loginBody('dave', { refresh_token: true }) })
    ).json() as Json;
    const fresh = await refresh(s, login.refresh_token);
    t.equal(fresh.statusCode, 200, 'a refresh token works before it expires');
    const next = fresh.json().refresh_token as string;
    const expired = await until(
      'the refresh token to expire',
      async () => {
        const r = await refresh(s, next);
        return r.statusCode === 401 ? r : undefined;
      },
      30_000,
    );
    t.equal(expired.json().errcode, 'M_UNKNOWN_TOKEN');
    t.equal(expired.json().soft_logout, true, 'an expired refresh token is a soft logout');
  });

  t.test(`matrix-js-sdk refreshes on ${backend.name}`, async (t) => {
    t.setTimeout(120_000);
    const s = await startTestServer(t, backend, { accessTokenLifetimeMs: HOUR });
    await s.register('carol');
    await s.app.listen({ host: '127.0.0.1', port: 0 });
    const baseUrl = `http://127.0.0.1:${(s.app.server.address() as AddressInfo).port}`;
    const anon = createClient({ baseUrl });
    const login = await anon.loginRequest({
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: 'carol' },
      password: PASSWORD,
      refresh_token: true,
    });
    t.ok(login.refresh_token, 'the SDK login gets a refresh token');
    t.equal(login.expires_in_ms, HOUR);
    const client = createClient({
      baseUrl,
      userId: login.user_id,
      deviceId: login.device_id,
      accessToken: login.access_token,
    });
    const refreshed = await client.refreshToken(login.refresh_token as string);
    t.ok(refreshed.access_token && refreshed.refresh_token);
    t.equal(refreshed.expires_in_ms, HOUR);
    client.setAccessToken(refreshed.access_token);
    t.equal((await client.whoami()).device_id, login.device_id, 'the new token is the same device');
    // The SDK's old refresh token is now refused, as a MatrixError it can act on.
    const err = await client.refreshToken(login.refresh_token as string).catch((e: unknown) => e);
    t.match(err, { errcode: 'M_UNKNOWN_TOKEN', httpStatus: 401 });
    client.stopClient();
    anon.stopClient();
  });
}

/**
 * Two processes on one PostgreSQL and one Redis: alice refreshes on the first, uses the new token
 * on the second (its first use there retires the old refresh token and access token), and the
 * first, which had the old access token cached, refuses it as soon as the bus tells it.
 */
const redisUrl = testRedisUrl();
const postgres = databaseBackends().find((b) => b.name === 'postgres');
t.test(
  'refresh across two processes',
  { skip: !postgres || !redisUrl ? 'needs TEST_DATABASE_URL and TEST_REDIS_URL' : false },
  async (t) => {
    t.setTimeout(120_000);
    const s = await startTestServer(t, postgres!, { accessTokenLifetimeMs: HOUR, redisUrl: redisUrl! });
    const otherRuntime = await startRuntime(s.config);
    const other = await buildApp(otherRuntime.services, { federation: otherRuntime.federation });
    t.teardown(async () => {
      await other.close();
      await otherRuntime.close();
    });
    const onOther = (token: string) =>
      other.inject({
        method: 'GET',
        url: `${V3}/account/whoami`,
        headers: { authorization: `Bearer ${token}` },
      });
    await s.register('alice');
    const login = (
      await s.request('POST', `${V3}/login`, { body: loginBody('alice', { refresh_token: true }) })
    ).json() as Json;
    t.equal((await whoami(s, login.access_token)).statusCode, 200, 'the first process caches the token');
    const next = (await refresh(s, login.refresh_token)).json() as Json;
    t.equal((await onOther(next.access_token)).statusCode, 200, 'the new token works on the other process');
    await until(
      'the first process to drop the retired token',
      async () => (await whoami(s, login.access_token)).statusCode === 401,
    );
    t.equal((await refresh(s, login.refresh_token)).statusCode, 401, 'the old refresh token is refused');
    t.equal((await onOther(login.access_token)).statusCode, 401);
  },
);
