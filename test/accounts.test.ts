import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { PASSWORD, SERVER_NAME, startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';

for (const backend of databaseBackends()) {
  t.test(`accounts on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);

    t.test('registration needs UIA, then creates the account and a device', async (t) => {
      const first = await s.request('POST', `${V3}/register`, {
        body: { username: 'alice', password: PASSWORD },
      });
      t.equal(first.statusCode, 401);
      const challenge = first.json();
      t.same(challenge.flows, [{ stages: ['m.login.dummy'] }]);
      t.type(challenge.session, 'string');
      t.notOk(challenge.errcode, 'a first challenge carries no error');

      const done = await s.request('POST', `${V3}/register`, {
        body: {
          username: 'Alice',
          password: PASSWORD,
          initial_device_display_name: 'laptop',
          auth: { type: 'm.login.dummy', session: challenge.session },
        },
      });
      t.equal(done.statusCode, 200);
      const login = done.json();
      t.equal(login.user_id, `@alice:${SERVER_NAME}`, 'usernames are lower-cased');
      t.match(login.access_token, /^cv_/);
      t.type(login.device_id, 'string');

      const who = await s.request('GET', `${V3}/account/whoami`, { token: login.access_token });
      t.equal(who.statusCode, 200);
      t.same(who.json(), { user_id: login.user_id, device_id: login.device_id, is_guest: false });

      const again = await s.request('POST', `${V3}/register`, {
        body: { username: 'alice', password: PASSWORD, auth: { type: 'm.login.dummy' } },
      });
      t.equal(again.statusCode, 400);
      t.equal(again.json().errcode, 'M_USER_IN_USE');
    });

    t.test('the access token is stored only as a hash', async (t) => {
      const login = await s.register('hashcheck');
      const rows = await s.runtime.database.db.selectFrom('access_tokens').selectAll().execute();
      t.ok(rows.length > 0);
      for (const row of rows) t.not(row.token_hash, login.access_token);
      t.notOk(JSON.stringify(rows).includes(login.access_token), 'no row holds the token itself');
      const user = await s.runtime.database.db
        .selectFrom('users')
        .selectAll()
        .where('user_id', '=', login.user_id)
        .executeTakeFirstOrThrow();
      t.match(user.password_hash, /^\$scrypt\$ln=10,r=8,p=1\$/);
      t.notOk(user.password_hash?.includes(PASSWORD));
    });

    t.test('usernames: availability and grammar', async (t) => {
      const free = await s.request('GET', `${V3}/register/available?username=nobody`);
      t.equal(free.statusCode, 200);
      t.same(free.json(), { available: true });
      const taken = await s.request('GET', `${V3}/register/available?username=alice`);
      t.equal(taken.statusCode, 400);
      t.equal(taken.json().errcode, 'M_USER_IN_USE');
      for (const bad of ['al ice', 'ali:ce', 'émile', '', 'x'.repeat(300)]) {
        const res = await s.request('GET', `${V3}/register/available?username=${encodeURIComponent(bad)}`);
        t.equal(res.statusCode, 400, `refuses ${JSON.stringify(bad)}`);
        t.match(res.json().errcode, /^M_(INVALID_USERNAME|INVALID_PARAM)$/);
      }
      const reg = await s.request('POST', `${V3}/register`, {
        body: { username: 'bad name', password: PASSWORD, auth: { type: 'm.login.dummy' } },
      });
      t.equal(reg.json().errcode, 'M_INVALID_USERNAME');
      const weak = await s.request('POST', `${V3}/register`, {
        body: { username: 'weakling', password: 'short', auth: { type: 'm.login.dummy' } },
      });
      t.equal(weak.statusCode, 400);
      t.equal(weak.json().errcode, 'M_WEAK_PASSWORD');
      const guest = await s.request('POST', `${V3}/register?kind=guest`, { body: {} });
      t.equal(guest.statusCode, 403);
      t.equal(guest.json().errcode, 'M_GUEST_ACCESS_FORBIDDEN');
    });

    t.test('login, logout and logout/all', async (t) => {
      await s.register('bob');
      const flows = await s.request('GET', `${V3}/login`);
      t.same(flows.json(), { flows: [{ type: 'm.login.password' }] });

      const login = async (user: string, password = PASSWORD, deviceId?: string) =>
        s.request('POST', `${V3}/login`, {
          body: {
            type: 'm.login.password',
            identifier: { type: 'm.id.user', user },
            password,
            ...(deviceId ? { device_id: deviceId } : {}),
          },
        });
      const a = await login('bob', PASSWORD, 'PHONE');
      t.equal(a.statusCode, 200);
      t.equal(a.json().device_id, 'PHONE');
      const b = await login(`@bob:${SERVER_NAME}`);
      t.equal(b.statusCode, 200, 'a full user ID works as identifier');
      const legacy = await s.request('POST', `${V3}/login`, {
        body: { type: 'm.login.password', user: 'bob', password: PASSWORD },
      });
      t.equal(legacy.statusCode, 200, 'the deprecated user field works');

      const again = await login('bob', PASSWORD, 'PHONE');
      t.equal(again.statusCode, 200);
      const oldToken = await s.request('GET', `${V3}/account/whoami`, { token: a.json().access_token });
      t.equal(oldToken.statusCode, 401, 'logging in as the same device ends its old session');
      t.equal(oldToken.json().errcode, 'M_UNKNOWN_TOKEN');

      const wrong = await login('bob', 'not the password');
      t.equal(wrong.statusCode, 403);
      t.equal(wrong.json().errcode, 'M_FORBIDDEN');
      const ghost = await login('ghost');
      t.equal(ghost.statusCode, 403, 'an unknown user looks the same as a wrong password');
      const otherServer = await login('@bob:elsewhere.test');
      t.equal(otherServer.statusCode, 403);
      const badType = await s.request('POST', `${V3}/login`, { body: { type: 'm.login.token', token: 'x' } });
      t.equal(badType.statusCode, 400);
      t.equal(badType.json().errcode, 'M_UNKNOWN');

      const out = await s.request('POST', `${V3}/logout`, { token: again.json().access_token });
      t.equal(out.statusCode, 200);
      t.equal(
        (await s.request('GET', `${V3}/account/whoami`, { token: again.json().access_token })).statusCode,
        401,
      );
      const devices = await s.request('GET', `${V3}/devices`, { token: b.json().access_token });
      t.notOk(
        devices.json().devices.some((d: { device_id: string }) => d.device_id === 'PHONE'),
        'logout removes the device',
      );

      const all = await s.request('POST', `${V3}/logout/all`, { token: b.json().access_token });
      t.equal(all.statusCode, 200);
      for (const token of [b.json().access_token, legacy.json().access_token]) {
        t.equal((await s.request('GET', `${V3}/account/whoami`, { token })).statusCode, 401);
      }
    });

    t.test('missing and unknown tokens', async (t) => {
      const none = await s.request('GET', `${V3}/account/whoami`);
      t.equal(none.statusCode, 401);
      t.equal(none.json().errcode, 'M_MISSING_TOKEN');
      const unknown = await s.request('GET', `${V3}/account/whoami`, { token: 'cv_nope' });
      t.equal(unknown.statusCode, 401);
      t.equal(unknown.json().errcode, 'M_UNKNOWN_TOKEN');
      const login = await s.register('querytoken');
      const viaQuery = await s.request('GET', `${V3}/account/whoami?access_token=${login.access_token}`);
      t.equal(viaQuery.statusCode, 200, 'the access_token query parameter still works');
      const malformed = await s.request('GET', `${V3}/account/whoami`, {
        headers: { authorization: 'Basic abc' },
      });
      t.equal(malformed.statusCode, 401);
    });

    t.test('failed logins are limited per account and per address', async (t) => {
      const limited = await startTestServer(t, backend, {
        loginFailuresPerWindow: 3,
        loginFailureWindowMs: 60_000,
      });
      await limited.register('carol');
      const attempt = (password: string, ip = '127.0.0.1') =>
        limited.app.inject({
          method: 'POST',
          url: `${V3}/login`,
          remoteAddress: ip,
          payload: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'carol' }, password },
        });
      for (let i = 0; i < 3; i++)
        t.equal((await attempt('wrong password', `127.0.0.${i + 1}`)).statusCode, 403);
      const blocked = await attempt(PASSWORD, '127.0.0.9');
      t.equal(
        blocked.statusCode,
        429,
        'the account is limited, even from a new address and with the right password',
      );
      t.equal(blocked.json().errcode, 'M_LIMIT_EXCEEDED');
      t.ok(blocked.json().retry_after_ms > 0 && blocked.json().retry_after_ms <= 60_000);

      await limited.register('dave');
      const ipAttempt = (user: string) =>
        limited.app.inject({
          method: 'POST',
          url: `${V3}/login`,
          remoteAddress: '127.0.0.50',
          payload: {
            type: 'm.login.password',
            identifier: { type: 'm.id.user', user },
            password: 'wrong password',
          },
        });
      for (const u of ['x1', 'x2', 'x3']) t.equal((await ipAttempt(u)).statusCode, 403);
      const ipBlocked = await ipAttempt('dave');
      t.equal(ipBlocked.statusCode, 429, 'the address is limited whatever account it tries');
    });

    t.test('password change behind UIA, other devices logged out', async (t) => {
      const main = await s.register('erin', { deviceId: 'MAIN' });
      const other = await s.request('POST', `${V3}/login`, {
        body: {
          type: 'm.login.password',
          identifier: { type: 'm.id.user', user: 'erin' },
          password: PASSWORD,
        },
      });
      const newPassword = 'a much better passphrase';
      const first = await s.request('POST', `${V3}/account/password`, {
        token: main.access_token,
        body: { new_password: newPassword },
      });
      t.equal(first.statusCode, 401);
      t.same(first.json().flows, [{ stages: ['m.login.password'] }]);
      const session = first.json().session;

      const wrong = await s.request('POST', `${V3}/account/password`, {
        token: main.access_token,
        body: {
          new_password: newPassword,
          auth: {
            type: 'm.login.password',
            session,
            identifier: { type: 'm.id.user', user: 'erin' },
            password: 'nope nope',
          },
        },
      });
      t.equal(wrong.statusCode, 401);
      t.equal(wrong.json().errcode, 'M_FORBIDDEN', 'a failed stage says why');
      t.equal(wrong.json().session, session);

      const asOther = await s.request('POST', `${V3}/account/password`, {
        token: main.access_token,
        body: {
          new_password: newPassword,
          auth: {
            type: 'm.login.password',
            session,
            identifier: { type: 'm.id.user', user: 'bob' },
            password: PASSWORD,
          },
        },
      });
      t.equal(asOther.statusCode, 403, "another user's password does not authorise: refused outright");
      t.equal(asOther.json().errcode, 'M_FORBIDDEN');

      const ok = await s.request('POST', `${V3}/account/password`, {
        token: main.access_token,
        body: {
          new_password: newPassword,
          auth: {
            type: 'm.login.password',
            session,
            identifier: { type: 'm.id.user', user: 'erin' },
            password: PASSWORD,
          },
        },
      });
      t.equal(ok.statusCode, 200);
      t.equal((await s.request('GET', `${V3}/account/whoami`, { token: main.access_token })).statusCode, 200);
      t.equal(
        (await s.request('GET', `${V3}/account/whoami`, { token: other.json().access_token })).statusCode,
        401,
        'the other device is logged out',
      );
      const oldPw = await s.request('POST', `${V3}/login`, {
        body: {
          type: 'm.login.password',
          identifier: { type: 'm.id.user', user: 'erin' },
          password: PASSWORD,
        },
      });
      t.equal(oldPw.statusCode, 403);
      const newPw = await s.request('POST', `${V3}/login`, {
        body: {
          type: 'm.login.password',
          identifier: { type: 'm.id.user', user: 'erin' },
          password: newPassword,
        },
      });
      t.equal(newPw.statusCode, 200);

      const reuse = await s.request('POST', `${V3}/account/password`, {
        token: main.access_token,
        body: { new_password: 'yet another passphrase', auth: { type: 'm.login.dummy', session } },
      });
      t.equal(reuse.statusCode, 400, 'a finished UIA session cannot be used again');
    });

    t.test('devices: list, get, rename, delete behind UIA', async (t) => {
      const frank = await s.register('frank', { deviceId: 'DESK' });
      const mallory = await s.register('mallory');
      const list = await s.request('GET', `${V3}/devices`, { token: frank.access_token });
      t.equal(list.statusCode, 200);
      t.same(
        list.json().devices.map((d: { device_id: string }) => d.device_id),
        ['DESK'],
      );
      const rename = await s.request('PUT', `${V3}/devices/DESK`, {
        token: frank.access_token,
        body: { display_name: 'Desk computer' },
      });
      t.equal(rename.statusCode, 200);
      const got = await s.request('GET', `${V3}/devices/DESK`, { token: frank.access_token });
      t.equal(got.json().display_name, 'Desk computer');
      t.equal(got.json().last_seen_ip, '127.0.0.1');

      const foreign = await s.request('GET', `${V3}/devices/DESK`, { token: mallory.access_token });
      t.equal(foreign.statusCode, 404, "another user's device does not exist for mallory");
      const foreignRename = await s.request('PUT', `${V3}/devices/DESK`, {
        token: mallory.access_token,
        body: { display_name: 'pwned' },
      });
      t.equal(foreignRename.statusCode, 404);
      const foreignDelete = await s.request('POST', `${V3}/delete_devices`, {
        token: mallory.access_token,
        body: {
          devices: ['DESK'],
          auth: {
            type: 'm.login.password',
            identifier: { type: 'm.id.user', user: 'mallory' },
            password: PASSWORD,
          },
        },
      });
      t.equal(foreignDelete.statusCode, 200, 'deleting a device ID one does not own is a no-op');
      t.equal(
        (await s.request('GET', `${V3}/account/whoami`, { token: frank.access_token })).statusCode,
        200,
      );

      const phone = await s.request('POST', `${V3}/login`, {
        body: {
          type: 'm.login.password',
          identifier: { type: 'm.id.user', user: 'frank' },
          password: PASSWORD,
          device_id: 'PHONE',
        },
      });
      const del = await s.request('DELETE', `${V3}/devices/PHONE`, { token: frank.access_token });
      t.equal(del.statusCode, 401, 'deletion needs UIA');
      const session = del.json().session;
      const delOk = await s.request('DELETE', `${V3}/devices/PHONE`, {
        token: frank.access_token,
        body: {
          auth: {
            type: 'm.login.password',
            session,
            identifier: { type: 'm.id.user', user: 'frank' },
            password: PASSWORD,
          },
        },
      });
      t.equal(delOk.statusCode, 200);
      t.equal(
        (await s.request('GET', `${V3}/account/whoami`, { token: phone.json().access_token })).statusCode,
        401,
      );
      t.equal((await s.request('GET', `${V3}/devices/PHONE`, { token: frank.access_token })).statusCode, 404);
      const missing = await s.request('DELETE', `${V3}/devices/NOPE`, { token: frank.access_token });
      t.equal(missing.statusCode, 404);
    });
  });
}
