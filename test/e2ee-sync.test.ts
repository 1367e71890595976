import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { oneTimeKeys, testDevice } from './helpers/e2ee.ts';
import { startTestServer, syncOnce } from './helpers/server.ts';

/**
 * The end-to-end encryption parts of /sync: to-device messages (delivered until a later since
 * token acknowledges them), device list changes of users who share a room, one-time key counts
 * and unused fallback key types.
 */
const V3 = '/_matrix/client/v3';
// biome-ignore lint/suspicious/noExplicitAny: sync bodies are read loosely in tests
type Json = Record<string, any>;

const sync = syncOnce;

for (const backend of databaseBackends()) {
  t.test(`end-to-end encryption in sync on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice', { deviceId: 'ALICEDEV' });
    const bob = await s.register('bob', { deviceId: 'BOBDEV' });
    const carol = await s.register('carol', { deviceId: 'CAROLDEV' });
    const room = (
      await s.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: { preset: 'public_chat' },
      })
    ).json().room_id;
    await s.request('POST', `${V3}/join/${encodeURIComponent(room)}`, { token: bob.access_token, body: {} });

    t.test(
      'a to-device message wakes the long-poll, arrives once, and stays until acknowledged',
      async (t) => {
        const first = await sync(s, bob);
        const pending = sync(s, bob, { since: first.next_batch, timeout: 10_000 });
        await new Promise((r) => setTimeout(r, 100));
        const started = performance.now();
        const sent = await s.request('PUT', `${V3}/sendToDevice/m.room_key_request/t1`, {
          token: alice.access_token,
          body: { messages: { [bob.user_id]: { BOBDEV: { n: 1 } } } },
        });
        t.equal(sent.statusCode, 200);
        const woken = await pending;
        t.ok(performance.now() - started < 5000, 'woken by the message');
        t.same(woken.to_device.events, [
          { sender: alice.user_id, type: 'm.room_key_request', content: { n: 1 } },
        ]);
        // The client did not confirm (it asks again with the old token): delivered again.
        const again = await sync(s, bob, { since: first.next_batch });
        t.same(
          again.to_device.events.map((e: Json) => e.content),
          [{ n: 1 }],
          'redelivered until a later token is used',
        );
        const next = await sync(s, bob, { since: woken.next_batch });
        t.same(next.to_device.events, [], 'not repeated after the later token');
        const old = await sync(s, bob, { since: first.next_batch });
        t.same(old.to_device.events, [], 'and gone once acknowledged');
        const initial = await sync(s, bob);
        t.same(initial.to_device.events, [], 'an initial sync does not bring it back');
      },
    );

    t.test('device list changes reach those who share a room, and only them', async (t) => {
      const aliceSince = (await sync(s, alice)).next_batch;
      const carolSince = (await sync(s, carol)).next_batch;
      const device = testDevice(bob);
      const up = await s.request('POST', `${V3}/keys/upload`, {
        token: bob.access_token,
        body: { device_keys: device.deviceKeys },
      });
      t.equal(up.statusCode, 200, up.body);
      const seen = await sync(s, alice, { since: aliceSince, timeout: 5000 });
      t.ok(seen.device_lists.changed.includes(bob.user_id), "alice learns of bob's new device");
      const notSeen = await sync(s, carol, { since: carolSince, timeout: 300 });
      t.notOk(notSeen.device_lists.changed.includes(bob.user_id), 'carol, who shares no room, does not');

      // carol joins: bob's devices become her concern; bob leaves: alice no longer shares a room.
      await s.request('POST', `${V3}/join/${encodeURIComponent(room)}`, {
        token: carol.access_token,
        body: {},
      });
      const joined = await sync(s, carol, { since: notSeen.next_batch });
      t.ok(joined.device_lists.changed.includes(bob.user_id), 'after joining, carol is told to fetch bob');
      await s.request('POST', `${V3}/rooms/${encodeURIComponent(room)}/leave`, {
        token: bob.access_token,
        body: {},
      });
      const left = await sync(s, alice, { since: seen.next_batch });
      t.ok(left.device_lists.left.includes(bob.user_id), 'alice no longer shares a room with bob');
    });

    t.test('keys and secrets reach the server only encrypted', async (t) => {
      const put = (type: string, content: unknown) =>
        s.request('PUT', `${V3}/user/${encodeURIComponent(alice.user_id)}/account_data/${type}`, {
          token: alice.access_token,
          body: content,
        });
      for (const type of ['m.cross_signing.master', 'm.megolm_backup.v1']) {
        const plain = await put(type, { key: 'a private key in the clear' });
        t.equal(plain.statusCode, 400, `${type} in the clear is refused`);
        t.equal(plain.json().errcode, 'M_BAD_JSON');
        const mixed = await put(type, { encrypted: { k: { iv: 'i', ciphertext: 'c', mac: 'm' } }, key: 'x' });
        t.equal(mixed.statusCode, 400, `${type} with a clear field beside the encrypted one is refused`);
      }
      const encrypted = await put('m.cross_signing.master', {
        encrypted: { keyid: { iv: 'aXY', ciphertext: 'Y2lwaGVy', mac: 'bWFj' } },
      });
      t.equal(encrypted.statusCode, 200, 'encrypted for secret storage, it is stored');
      const since = (await sync(s, bob)).next_batch;
      for (const type of ['m.room_key', 'm.forwarded_room_key', 'm.secret.send']) {
        const res = await s.request('PUT', `${V3}/sendToDevice/${type}/plain-${type}`, {
          token: alice.access_token,
          body: { messages: { [bob.user_id]: { BOBDEV: { room_id: room, session_key: 'secret' } } } },
        });
        t.equal(res.statusCode, 400, `a ${type} to-device message in the clear is refused`);
        t.equal(res.json().errcode, 'M_INVALID_PARAM');
      }
      t.same((await sync(s, bob, { since })).to_device.events, [], 'and nothing of them is delivered');
    });

    t.test('one-time key counts and fallback key types follow uploads and claims', async (t) => {
      const device = testDevice(carol);
      await s.request('POST', `${V3}/keys/upload`, {
        token: carol.access_token,
        body: {
          device_keys: device.deviceKeys,
          one_time_keys: oneTimeKeys(device, ['a', 'b', 'c']),
          fallback_keys: oneTimeKeys(device, ['f'], true),
        },
      });
      let r = await sync(s, carol);
      t.same(r.device_one_time_keys_count, { signed_curve25519: 3 });
      t.same(r.device_unused_fallback_key_types, ['signed_curve25519']);
      for (let i = 0; i < 4; i++) {
        const claim = await s.request('POST', `${V3}/keys/claim`, {
          token: alice.access_token,
          body: { one_time_keys: { [carol.user_id]: { CAROLDEV: 'signed_curve25519' } } },
        });
        t.equal(claim.statusCode, 200);
      }
      r = await sync(s, carol, { since: r.next_batch });
      t.same(r.device_one_time_keys_count, { signed_curve25519: 0 }, 'all three claimed');
      t.same(r.device_unused_fallback_key_types, [], 'and then the fallback key');
      await s.request('POST', `${V3}/keys/upload`, {
        token: carol.access_token,
        body: { one_time_keys: oneTimeKeys(device, ['d']) },
      });
      r = await sync(s, carol, { since: r.next_batch });
      t.same(r.device_one_time_keys_count, { signed_curve25519: 1 }, 'a new upload counts at once');
    });
  });
}
