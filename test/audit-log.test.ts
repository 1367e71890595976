import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { PASSWORD, startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';

for (const backend of databaseBackends()) {
  t.test(`audit log on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');

    t.test('a failed login, a login and a password change are recorded without secrets', async (t) => {
      const bad = await s.request('POST', `${V3}/login`, {
        body: {
          type: 'm.login.password',
          identifier: { type: 'm.id.user', user: 'alice' },
          password: 'wrong guess',
        },
        headers: { 'x-forwarded-for': '127.0.0.9' },
      });
      t.equal(bad.statusCode, 403);
      const good = await s.login('alice');
      const change = await s.request('POST', `${V3}/account/password`, {
        token: good.access_token,
        body: {
          new_password: 'another long passphrase',
          logout_devices: false,
          auth: {
            type: 'm.login.password',
            identifier: { type: 'm.id.user', user: 'alice' },
            password: PASSWORD,
          },
        },
      });
      t.equal(change.statusCode, 200, change.body);

      const records = await s.runtime.services.audit.list({ limit: 1000 });
      const actions = records.map((r) => r.action);
      t.ok(actions.includes('login.failed'), 'the failed login');
      t.ok(actions.includes('login'), 'the login');
      t.ok(actions.includes('device.new'), 'the new device');
      t.ok(actions.includes('password.change'), 'the password change');
      const failed = records.find((r) => r.action === 'login.failed');
      t.equal(failed?.target, alice.user_id);
      const login = records.find((r) => r.action === 'login' && r.target === good.device_id);
      t.equal(login?.actor, alice.user_id);
      const dump = JSON.stringify(records);
      for (const secret of [
        PASSWORD,
        'wrong guess',
        'another long passphrase',
        good.access_token,
        alice.access_token,
      ])
        t.notOk(dump.includes(secret), 'no password or token in the log');
      t.ok(
        records.every((r, i) => i === 0 || r.id > (records[i - 1]?.id ?? 0)),
        'entries come back in the order they were written',
      );
    });

    t.test('filters and paging', async (t) => {
      const failed = await s.runtime.services.audit.list({ action: 'login.failed' });
      t.ok(failed.length >= 1);
      t.ok(failed.every((r) => r.action === 'login.failed'));
      const first = await s.runtime.services.audit.list({ limit: 1 });
      t.equal(first.length, 1);
      const rest = await s.runtime.services.audit.list({ afterId: first[0]?.id ?? 0 });
      t.ok(rest.every((r) => r.id > (first[0]?.id ?? 0)));
      const future = await s.runtime.services.audit.list({ sinceTs: Date.now() + 86_400_000 });
      t.equal(future.length, 0);
    });
  });
}
