import t from 'tap';
import { startRuntime } from '../src/runtime.ts';
import { databaseBackends } from './helpers/backends.ts';
import { deviceRows, equipDevice, NOTHING_LEFT } from './helpers/key-management.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { until } from './helpers/wait.ts';

// Both backends on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);

const V3 = '/_matrix/client/v3';
const DAY = 86_400_000;

/** Makes a device look last seen `ago` ms ago (and created before that), as if it had been idle since. */
async function idleSince(s: TestServer, userId: string, deviceId: string, ago: number) {
  const ts = Date.now() - ago;
  await s.runtime.services.db
    .updateTable('devices')
    .set({ last_seen_ts: ts, created_ts: ts - 1000 })
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .execute();
}

/**
 * Device inactivity expiry: alice has a laptop she uses and an old phone she has not used for 40
 * days (and a tablet she logged in on 40 days ago and never used); with a 30-day expiry the job
 * signs out the phone and the tablet and removes their keys and waiting messages, audited; the
 * laptop stays. Off by default. On PostgreSQL, two processes run the job at once and each device
 * is expired exactly once.
 */
for (const backend of databaseBackends()) {
  t.test(`device inactivity expiry on ${backend.name}`, async (t) => {
    t.setTimeout(180_000);
    const s = await startTestServer(t, backend, { deviceInactivityExpiryMs: 30 * DAY });
    const laptop = await s.register('alice');
    const phone = await s.login('alice');
    const tablet = await s.login('alice');
    const bob = await s.register('bob');
    for (const device of [laptop, phone]) await equipDevice(s, device, bob);
    // A refresh token on the phone goes too.
    await s.request('POST', `${V3}/login`, {
      body: {
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: 'alice' },
        password: PASSWORD,
        device_id: phone.device_id,
        refresh_token: true,
      },
    });
    await idleSince(s, phone.user_id, phone.device_id, 40 * DAY);
    await s.runtime.services.db
      .updateTable('devices')
      .set({ last_seen_ts: null, created_ts: Date.now() - 40 * DAY })
      .where('device_id', '=', tablet.device_id)
      .execute();
    // A device seen 20 days ago is not old enough.
    await idleSince(s, laptop.user_id, laptop.device_id, 20 * DAY);
    const phoneBefore = await deviceRows(s, phone.user_id, phone.device_id);
    t.same(
      phoneBefore,
      {
        devices: 1,
        access_tokens: 1,
        refresh_tokens: 1,
        device_keys: 1,
        one_time_keys: 2,
        fallback_keys: 1,
        to_device: 1,
      },
      'the phone holds keys, tokens and a waiting message',
    );

    const result = await s.runtime.services.deviceExpiry.runJob();
    t.ok(result.ran);
    t.same(
      result.expired.map((d) => d.deviceId).sort(),
      [phone.device_id, tablet.device_id].sort(),
      'the idle phone and the never-used tablet expire',
    );
    t.same(await deviceRows(s, phone.user_id, phone.device_id), NOTHING_LEFT, 'nothing of the phone is left');
    t.same(await deviceRows(s, tablet.user_id, tablet.device_id), NOTHING_LEFT);
    const laptopAfter = await deviceRows(s, laptop.user_id, laptop.device_id);
    t.equal(laptopAfter.devices, 1, 'the laptop stays');
    t.equal(laptopAfter.device_keys, 1);
    t.equal(laptopAfter.one_time_keys, 2);

    // The phone's token is refused (a real logout: the device is gone); the laptop's works.
    const refused = await s.request('GET', `${V3}/account/whoami`, { token: phone.access_token });
    t.equal(refused.statusCode, 401);
    t.equal(refused.json().errcode, 'M_UNKNOWN_TOKEN');
    t.equal(refused.json().soft_logout, false);
    t.equal((await s.request('GET', `${V3}/account/whoami`, { token: laptop.access_token })).statusCode, 200);

    // Others no longer see the device's keys.
    const query = await s.request('POST', `${V3}/keys/query`, {
      token: bob.access_token,
      body: { device_keys: { [laptop.user_id]: [] } },
    });
    t.same(Object.keys(query.json().device_keys[laptop.user_id]), [laptop.device_id]);

    // Audited, one entry per device.
    const audit = await s.runtime.services.audit.list({ action: 'device.expire' });
    t.same(audit.map((a) => a.details.device_id).sort(), [phone.device_id, tablet.device_id].sort());
    t.equal(audit[0]?.actor, 'policy:device_inactivity');
    t.equal(audit[0]?.target, laptop.user_id);
    t.equal(audit[0]?.details.max_idle_ms, 30 * DAY);

    // Nothing more to do on the next run.
    t.same((await s.runtime.services.deviceExpiry.runJob()).expired, []);
  });

  t.test(`device expiry is off by default on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    await idleSince(s, alice.user_id, alice.device_id, 3650 * DAY);
    const result = await s.runtime.services.deviceExpiry.runJob();
    t.same(result, { ran: false, expired: [] });
    t.equal((await deviceRows(s, alice.user_id, alice.device_id)).devices, 1, 'a ten-year-idle device stays');
  });

  t.test(`the expiry job runs by itself on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend, {
      deviceInactivityExpiryMs: DAY,
      deviceExpiryIntervalMs: 200,
    });
    const alice = await s.register('alice');
    const old = await s.login('alice');
    await idleSince(s, old.user_id, old.device_id, 2 * DAY);
    await until('the job to expire the idle device', async () => {
      return (await deviceRows(s, old.user_id, old.device_id)).devices === 0;
    });
    t.equal((await deviceRows(s, alice.user_id, alice.device_id)).devices, 1, 'the active device stays');
  });

  if (backend.name === 'postgres') {
    t.test('two processes sharing PostgreSQL expire each device once', async (t) => {
      t.setTimeout(180_000);
      const s = await startTestServer(t, backend, { deviceInactivityExpiryMs: DAY });
      const other = await startRuntime(s.config);
      t.teardown(() => other.close());
      const alice = await s.register('alice');
      const stale = [];
      for (let i = 0; i < 12; i++) stale.push(await s.login('alice'));
      for (const d of stale) await idleSince(s, d.user_id, d.device_id, 2 * DAY);
      const [a, b] = await Promise.all([
        s.runtime.services.deviceExpiry.runJob(),
        other.services.deviceExpiry.runJob(),
      ]);
      t.equal(a.expired.length + b.expired.length, stale.length, 'every idle device expired');
      const audit = await s.runtime.services.audit.list({ action: 'device.expire' });
      t.equal(audit.length, stale.length, 'each audited once');
      t.equal(new Set(audit.map((x) => x.details.device_id)).size, stale.length);
      t.equal((await deviceRows(s, alice.user_id, alice.device_id)).devices, 1);
    });
  }
}
