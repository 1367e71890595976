import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { PASSWORD, startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';

// Scrypt hashes and several servers: took 167 s (over tap's 120 s) in a full run at load 25.
t.setTimeout(300_000);

for (const backend of databaseBackends()) {
  t.test(`registration modes on ${backend.name}`, async (t) => {
    t.test('closed: refused, and the token validity endpoint is off', async (t) => {
      const s = await startTestServer(t, backend, { registration: 'closed' });
      const res = await s.request('POST', `${V3}/register`, {
        body: { username: 'alice', password: PASSWORD, auth: { type: 'm.login.dummy' } },
      });
      t.equal(res.statusCode, 403);
      t.equal(res.json().errcode, 'M_FORBIDDEN');
      const validity = await s.request(
        'GET',
        '/_matrix/client/v1/register/m.login.registration_token/validity?token=x',
      );
      t.equal(validity.statusCode, 403);
    });

    t.test('token: uses allowed, expiry, and m.login.dummy refused', async (t) => {
      const now = Date.now();
      const s = await startTestServer(t, backend, { registration: 'token' });
      const tokens = s.runtime.services.registrationTokens;
      await tokens.create({ token: 'twice', usesAllowed: 2 });
      await tokens.create({ token: 'expired', usesAllowed: null, expiryTime: now - 1000 });

      const validity = async (token: string) =>
        (
          await s.request(
            'GET',
            `/_matrix/client/v1/register/m.login.registration_token/validity?token=${encodeURIComponent(token)}`,
          )
        ).json().valid;
      t.equal(await validity('twice'), true);
      t.equal(await validity('expired'), false);
      t.equal(await validity('nope'), false);
      t.equal(await validity('bad token!'), false);

      const register = (username: string, auth: Record<string, unknown> | undefined) =>
        s.request('POST', `${V3}/register`, {
          body: { username, password: PASSWORD, ...(auth ? { auth } : {}) },
        });
      const challenge = await register('u1', undefined);
      t.equal(challenge.statusCode, 401);
      t.same(challenge.json().flows, [{ stages: ['m.login.registration_token'] }]);
      const dummy = await register('u1', { type: 'm.login.dummy', session: challenge.json().session });
      t.equal(dummy.statusCode, 401, 'm.login.dummy is not a flow in token mode');
      t.equal(dummy.json().errcode, 'M_UNRECOGNIZED');

      const wrong = await register('u1', { type: 'm.login.registration_token', token: 'nope' });
      t.equal(wrong.statusCode, 401);
      t.equal(wrong.json().errcode, 'M_FORBIDDEN');
      const expired = await register('u1', { type: 'm.login.registration_token', token: 'expired' });
      t.equal(expired.statusCode, 401);

      for (const name of ['u1', 'u2']) {
        const ok = await register(name, { type: 'm.login.registration_token', token: 'twice' });
        t.equal(ok.statusCode, 200, `${name} registers with the token`);
      }
      t.equal(await validity('twice'), false, 'both uses spent');
      const third = await register('u3', { type: 'm.login.registration_token', token: 'twice' });
      t.equal(third.statusCode, 401, 'a third use is refused');
      const row = (await tokens.list()).find((r) => r.token === 'twice');
      t.equal(row?.completed, 2);

      await tokens.create({ token: 'soon-gone', usesAllowed: null, expiryTime: Date.now() + 1500 });
      t.equal(await validity('soon-gone'), true);
      await new Promise((r) => setTimeout(r, 1600));
      t.equal(await validity('soon-gone'), false, 'a token expires at its expiry time');
    });

    t.test('registration is limited per address', async (t) => {
      const s = await startTestServer(t, backend, { registrationsPerWindow: 2 });
      for (const name of ['r1', 'r2']) await s.register(name);
      const res = await s.request('POST', `${V3}/register`, {
        body: { username: 'r3', password: PASSWORD, auth: { type: 'm.login.dummy' } },
      });
      t.equal(res.statusCode, 429);
      t.equal(res.json().errcode, 'M_LIMIT_EXCEEDED');
      t.ok(res.json().retry_after_ms > 0);
    });

    t.test('inhibit_login and a server-chosen username', async (t) => {
      const s = await startTestServer(t, backend);
      const res = await s.request('POST', `${V3}/register`, {
        body: { password: PASSWORD, inhibit_login: true, auth: { type: 'm.login.dummy' } },
      });
      t.equal(res.statusCode, 200);
      t.match(res.json().user_id, /^@user\d+:/);
      t.notOk(res.json().access_token, 'no token with inhibit_login');
    });
  });
}

t.test('look-ups are rate limited per address', async (t) => {
  const [backend] = databaseBackends();
  const s = await startTestServer(t, backend!, { registration: 'token' });
  const { LOOKUPS_PER_MINUTE } = await import('../src/services/accounts.service.ts');
  const lookup = (i: number) =>
    s.app.inject({
      method: 'GET',
      url:
        i % 2
          ? `${V3}/register/available?username=free${i}`
          : `/_matrix/client/v1/register/m.login.registration_token/validity?token=guess${i}`,
      remoteAddress: '127.0.0.77',
    });
  for (let i = 0; i < LOOKUPS_PER_MINUTE; i++) t.equal((await lookup(i)).statusCode, 200);
  const limited = await lookup(LOOKUPS_PER_MINUTE);
  t.equal(limited.statusCode, 429, 'guessing tokens or usernames is limited');
  t.equal(limited.json().errcode, 'M_LIMIT_EXCEEDED');
  const other = await s.app.inject({
    method: 'GET',
    url: `${V3}/register/available?username=x1`,
    remoteAddress: '127.0.0.78',
  });
  t.equal(other.statusCode, 200, 'another address is not affected');
});

t.test('a first request without a password learns the flows', async (t) => {
  const [backend] = databaseBackends();
  const s = await startTestServer(t, backend!);
  const res = await s.request('POST', `${V3}/register`, { body: {} });
  t.equal(res.statusCode, 401);
  t.same(res.json().flows, [{ stages: ['m.login.dummy'] }]);
  const noPassword = await s.request('POST', `${V3}/register`, {
    body: { username: 'nopw', auth: { type: 'm.login.dummy', session: res.json().session } },
  });
  t.equal(noPassword.statusCode, 400);
  t.equal(noPassword.json().errcode, 'M_MISSING_PARAM');
  const reuse = await s.request('POST', `${V3}/register`, {
    body: {
      username: 'nopw',
      password: PASSWORD,
      auth: { type: 'm.login.dummy', session: res.json().session },
    },
  });
  t.equal(reuse.statusCode, 400, 'a UIA session ends after one attempt at its action, even a failed one');
});
