import t from 'tap';
import { BATCH_SIZE, LIMITS } from '../src/services/request-limits.ts';
import { databaseBackends } from './helpers/backends.ts';
import { type Json, oneTimeKeys, testDevice } from './helpers/e2ee.ts';
import { type Login, SERVER_NAME, startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';

/** `n` local user IDs that need not exist. */
const users = (n: number) => Array.from({ length: n }, (_, i) => `@u${i}:${SERVER_NAME}`);
/** `n` device IDs mapped to an algorithm, as /keys/claim takes them. */
const devices = (n: number, prefix = 'D') =>
  Object.fromEntries(Array.from({ length: n }, (_, i) => [`${prefix}${i}`, 'signed_curve25519']));

for (const backend of databaseBackends()) {
  t.test(`request limits on ${backend.name}`, async (t) => {
    const outer = t;
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice', { deviceId: 'ALICEPHONE' });
    const bob = await s.register('bob', { deviceId: 'BOBONE' });
    const bobTwo = await s.login('bob', { deviceId: 'BOBTWO' });
    const bobThree = await s.login('bob', { deviceId: 'BOBTHREE' });
    const post = (who: Login, path: string, body: unknown) =>
      s.request('POST', `${V3}${path}`, { token: who.access_token, body });
    const tooLarge = (t: typeof outer, res: { statusCode: number; json(): Json }, what: RegExp) => {
      t.equal(res.statusCode, 413);
      t.equal(res.json().errcode, 'M_TOO_LARGE');
      t.match(res.json().error, what);
    };

    t.test('/keys/claim: at most keysClaimDevices devices, claimed in batches', async (t) => {
      // bob's first device has one-time keys, the second only a fallback key, the third nothing.
      const one = testDevice(bob);
      const two = testDevice(bobTwo);
      t.equal(
        (
          await post(bob, '/keys/upload', {
            device_keys: one.deviceKeys,
            one_time_keys: oneTimeKeys(one, ['k1', 'k2']),
          })
        ).statusCode,
        200,
      );
      t.equal(
        (
          await post(bobTwo, '/keys/upload', {
            device_keys: two.deviceKeys,
            fallback_keys: oneTimeKeys(two, ['f1'], true),
          })
        ).statusCode,
        200,
      );
      // Unknown devices first, so bob's devices fall in a later batch than the first.
      const wanted = {
        [`@nobody:${SERVER_NAME}`]: devices(BATCH_SIZE + 10),
        [bob.user_id]: {
          BOBONE: 'signed_curve25519',
          BOBTWO: 'signed_curve25519',
          BOBTHREE: 'signed_curve25519',
        },
      };
      const res = await post(alice, '/keys/claim', { one_time_keys: wanted });
      t.equal(res.statusCode, 200, res.body);
      const got = res.json().one_time_keys;
      t.same(Object.keys(got), [bob.user_id], 'only bob has keys');
      t.same(Object.keys(got[bob.user_id]).sort(), ['BOBONE', 'BOBTWO'], 'a one-time key and a fallback key');
      t.same(Object.keys(got[bob.user_id].BOBONE), ['signed_curve25519:k1'], 'the oldest one-time key');
      t.same(Object.keys(got[bob.user_id].BOBTWO), ['signed_curve25519:f1'], 'the fallback key');
      const again = (await post(alice, '/keys/claim', { one_time_keys: wanted })).json().one_time_keys;
      t.same(
        Object.keys(again[bob.user_id].BOBONE),
        ['signed_curve25519:k2'],
        'the next one, never the same twice',
      );
      t.same(Object.keys(again[bob.user_id].BOBTWO), ['signed_curve25519:f1'], 'the fallback key again');
      void bobThree;

      const spread = Object.fromEntries(users(10).map((u) => [u, devices(LIMITS.keysClaimDevices / 10)]));
      t.equal((await post(alice, '/keys/claim', { one_time_keys: spread })).statusCode, 200, 'at the limit');
      const over = { ...spread, [`@extra:${SERVER_NAME}`]: devices(1) };
      tooLarge(t, await post(alice, '/keys/claim', { one_time_keys: over }), /At most 1000 devices/);
    });

    t.test('/keys/upload: at most keysUploadKeys keys', async (t) => {
      const device = testDevice(alice);
      const ids = (n: number, p: string) => Array.from({ length: n }, (_, i) => `${p}${i}`);
      t.equal((await post(alice, '/keys/upload', { device_keys: device.deviceKeys })).statusCode, 200);
      const atLimit = await post(alice, '/keys/upload', {
        one_time_keys: oneTimeKeys(device, ids(LIMITS.keysUploadKeys - 1, 'a')),
        fallback_keys: oneTimeKeys(device, ['fb'], true),
      });
      t.equal(atLimit.statusCode, 200, atLimit.body);
      t.same(atLimit.json().one_time_key_counts, { signed_curve25519: LIMITS.keysUploadKeys - 1 });
      const over = await post(alice, '/keys/upload', {
        one_time_keys: oneTimeKeys(device, ids(LIMITS.keysUploadKeys, 'b')),
        fallback_keys: oneTimeKeys(device, ['fb2'], true),
      });
      tooLarge(t, over, /At most 100 one-time and fallback keys/);
      const counts = (await post(alice, '/keys/upload', {})).json().one_time_key_counts;
      t.same(
        counts,
        { signed_curve25519: LIMITS.keysUploadKeys - 1 },
        'nothing of the refused upload was stored',
      );
      // A bad signature among many is still found.
      const keys = oneTimeKeys(device, ids(40, 'c'));
      keys['signed_curve25519:c33'].key = keys['signed_curve25519:c34'].key;
      const bad = await post(alice, '/keys/upload', { one_time_keys: keys });
      t.equal(bad.statusCode, 400);
      t.equal(bad.json().errcode, 'M_INVALID_SIGNATURE');
    });

    t.test('/keys/query: at most keysQueryUsers users and keysQueryDevices device IDs', async (t) => {
      const ok = await post(alice, '/keys/query', {
        device_keys: Object.fromEntries(users(LIMITS.keysQueryUsers).map((u) => [u, []])),
      });
      t.equal(ok.statusCode, 200, 'at the user limit');
      const tooMany = await post(alice, '/keys/query', {
        device_keys: Object.fromEntries(users(LIMITS.keysQueryUsers + 1).map((u) => [u, []])),
      });
      tooLarge(t, tooMany, /At most 1000 users/);
      const ids = Array.from({ length: LIMITS.keysQueryDevices / 2 + 1 }, (_, i) => `D${i}`);
      const deviceHeavy = await post(alice, '/keys/query', {
        device_keys: { [alice.user_id]: ids, [bob.user_id]: ids },
      });
      tooLarge(t, deviceHeavy, /At most 10000 device IDs/);
    });

    t.test('/sendToDevice: at most toDeviceUsers users and toDeviceMessages messages', async (t) => {
      const put = (txn: string, messages: Json) =>
        s.request('PUT', `${V3}/sendToDevice/m.test/${txn}`, {
          token: alice.access_token,
          body: { messages },
        });
      const many = Object.fromEntries(users(LIMITS.toDeviceUsers).map((u) => [u, { '*': { a: 1 } }]));
      // bob's three devices, found in a later batch than the first of the device lookup.
      const withBob = { ...many, [bob.user_id]: { '*': { hello: 1 } } };
      delete withBob[`@u0:${SERVER_NAME}`];
      t.equal((await put('t1', withBob)).statusCode, 200, 'at the user limit');
      const sync = await s.request('GET', `${V3}/sync`, { token: bobTwo.access_token });
      t.same(
        sync.json().to_device.events.map((e: Json) => e.content),
        [{ hello: 1 }],
        'every device of bob got it',
      );
      tooLarge(t, await put('t2', { ...many, [bob.user_id]: { '*': {} } }), /At most 1000 users/);
    });

    t.test('filters: at most filterListEntries entries per list (the schema, 400 M_BAD_JSON)', async (t) => {
      const types = (n: number) => Array.from({ length: n }, (_, i) => `m.t${i}`);
      const at = await post(alice, `/user/${encodeURIComponent(alice.user_id)}/filter`, {
        room: { timeline: { types: types(LIMITS.filterListEntries) } },
      });
      t.equal(at.statusCode, 200);
      const over = await post(alice, `/user/${encodeURIComponent(alice.user_id)}/filter`, {
        room: { timeline: { types: types(LIMITS.filterListEntries + 1) } },
      });
      t.equal(over.statusCode, 400);
      t.equal(over.json().errcode, 'M_BAD_JSON');
      const senders = Array.from(
        { length: LIMITS.filterListEntries },
        (_, i) => `@someone-with-a-long-name-${i}:${SERVER_NAME}`,
      );
      const big = { room: { timeline: { senders }, state: { senders } } };
      tooLarge(
        t,
        await post(alice, `/user/${encodeURIComponent(alice.user_id)}/filter`, big),
        /may not exceed 65536 bytes/,
      );
      const inline = await s.request('GET', `${V3}/sync?filter=${encodeURIComponent(JSON.stringify(big))}`, {
        token: alice.access_token,
      });
      t.equal(inline.statusCode, 400, 'an inline filter over the size too');
      t.equal(inline.json().errcode, 'M_INVALID_PARAM');
    });
  });
}
