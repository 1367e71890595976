import t from 'tap';
import { membershipOf } from '../src/storage/rooms.repository.ts';
import { databaseBackends } from './helpers/backends.ts';
import { crossSigning, testDevice } from './helpers/e2ee.ts';
import { startHomeservers } from './helpers/federation.ts';
import { uploadCrossSigning } from './helpers/key-management.ts';
import { okCaller, syncOnce, type TestServer } from './helpers/server.ts';
import { until } from './helpers/wait.ts';

/**
 * Device list changes of the members a room had before this server joined it (client-server
 * API, Device lists: `device_lists` of /sync, /keys/changes). alice on hs1 creates a room and
 * carol (hs1) joins it; bob on hs2 then joins over federation, so on hs2 their joins are only the
 * state of the send_join answer, never timeline events. bob must still hear of them: alice and
 * carol in `changed` once he joins, alice again when she adds a device and when she uploads
 * cross-signing keys (m.device_list_update, m.signing_key_update), carol not then; and alice in
 * `left` when she leaves, in /sync and /keys/changes alike.
 */
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
t.setTimeout(600_000);

const untilLong = <T>(what: string, check: () => Promise<T | undefined | false>) =>
  until(what, check, 60_000);

for (const backend of databaseBackends()) {
  t.test(`device lists of members who joined before this server, on ${backend.name}`, async (t) => {
    const { servers } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const ok1 = okCaller(hs1);
    const ok2 = okCaller(hs2);
    const db2 = hs2.runtime.database.db;
    const alice = await hs1.register('alice', { deviceId: 'ALICEPHONE' });
    const carol = await hs1.register('carol', { deviceId: 'CAROLPHONE' });
    const bob = await hs2.register('bob', { deviceId: 'BOBLAPTOP' });
    await ok1('POST', `${V3}/keys/upload`, alice, { device_keys: testDevice(alice).deviceKeys });
    await ok1('POST', `${V3}/keys/upload`, carol, { device_keys: testDevice(carol).deviceKeys });
    await ok2('POST', `${V3}/keys/upload`, bob, { device_keys: testDevice(bob).deviceKeys });
    const roomId = (await ok1('POST', `${V3}/createRoom`, alice, { preset: 'public_chat' }))
      .room_id as string;
    await ok1('POST', `${V3}/join/${enc(roomId)}`, carol, {});

    const keysChanges = (from: string, to: string) =>
      ok2('GET', `${V3}/keys/changes?from=${enc(from)}&to=${enc(to)}`, bob);
    /** hs2's cached devices of `userId` with published keys. */
    const cachedDevices = async (userId: string) =>
      (
        await db2
          .selectFrom('remote_device_keys')
          .select('device_id')
          .where('user_id', '=', userId)
          .where('key_json', 'is not', null)
          .orderBy('device_id')
          .execute()
      ).map((r) => r.device_id);

    const beforeJoin = (await syncOnce(hs2, bob)).next_batch as string;
    await ok2('POST', `${V3}/join/${enc(roomId)}?via=hs1.test`, bob, {});
    const joined = await syncOnce(hs2, bob, { since: beforeJoin, timeout: 0 });
    t.ok(joined.rooms?.join?.[roomId], 'bob is in the room on hs2');
    t.ok(
      joined.device_lists?.changed?.includes(alice.user_id),
      'alice (there before hs2 joined) is in changed once bob joins',
    );
    t.ok(joined.device_lists?.changed?.includes(carol.user_id), 'and carol');
    t.notOk(joined.device_lists?.left?.includes(alice.user_id), 'alice is not in left');
    const changesAtJoin = await keysChanges(beforeJoin, joined.next_batch);
    t.ok(changesAtJoin.changed.includes(alice.user_id), '/keys/changes names alice too');

    // hs2 tracks alice once bob queries her keys (and fills its cache).
    const first = await ok2('POST', `${V3}/keys/query`, bob, { device_keys: { [alice.user_id]: [] } });
    t.same(Object.keys(first.device_keys[alice.user_id]), ['ALICEPHONE']);

    t.test('a new device of alice reaches bob’s device_lists.changed', async (t) => {
      const since = (await syncOnce(hs2, bob)).next_batch as string;
      const tablet = await hs1.login('alice', { deviceId: 'ALICETABLET' });
      await ok1('POST', `${V3}/keys/upload`, tablet, { device_keys: testDevice(tablet).deviceKeys });
      await untilLong('alice’s new device cached on hs2', async () =>
        (await cachedDevices(alice.user_id)).includes('ALICETABLET'),
      );
      const synced = await syncOnce(hs2, bob, { since, timeout: 0 });
      t.ok(synced.device_lists?.changed?.includes(alice.user_id), 'alice is in changed');
      t.notOk(synced.device_lists?.changed?.includes(carol.user_id), 'carol, who changed nothing, is not');
      const changes = await keysChanges(since, synced.next_batch);
      t.ok(changes.changed.includes(alice.user_id), '/keys/changes names alice');
      const answer = await ok2('POST', `${V3}/keys/query`, bob, { device_keys: { [alice.user_id]: [] } });
      t.same(Object.keys(answer.device_keys[alice.user_id]).sort(), ['ALICEPHONE', 'ALICETABLET']);
    });

    t.test('alice’s cross-signing keys reach bob’s device_lists.changed', async (t) => {
      const since = (await syncOnce(hs2, bob)).next_batch as string;
      const cs = crossSigning(alice.user_id);
      await uploadCrossSigning(hs1, alice, cs.body);
      await untilLong('alice’s master key cached on hs2', async () => {
        const row = await db2
          .selectFrom('remote_cross_signing_keys')
          .select('public_key')
          .where('user_id', '=', alice.user_id)
          .where('usage', '=', 'master')
          .executeTakeFirst();
        return row?.public_key === cs.master.publicKey;
      });
      const synced = await syncOnce(hs2, bob, { since, timeout: 0 });
      t.ok(synced.device_lists?.changed?.includes(alice.user_id), 'alice is in changed');
      const answer = await ok2('POST', `${V3}/keys/query`, bob, { device_keys: { [alice.user_id]: [] } });
      t.same(answer.master_keys[alice.user_id].keys, cs.body.master_key.keys, 'and bob gets her master key');
    });

    t.test('alice leaves: bob’s device_lists.left names her, not carol', async (t) => {
      const since = (await syncOnce(hs2, bob)).next_batch as string;
      await ok1('POST', `${V3}/rooms/${enc(roomId)}/leave`, alice, {});
      await untilLong(
        'alice’s leave on hs2',
        async () => (await membershipOf(db2, roomId, alice.user_id))?.membership === 'leave',
      );
      const synced = await syncOnce(hs2, bob, { since, timeout: 0 });
      t.ok(synced.device_lists?.left?.includes(alice.user_id), 'alice is in left');
      t.notOk(synced.device_lists?.left?.includes(carol.user_id), 'carol, still there, is not');
      t.notOk(synced.device_lists?.changed?.includes(alice.user_id), 'alice is not in changed');
      const changes = await keysChanges(since, synced.next_batch);
      t.ok(changes.left.includes(alice.user_id), '/keys/changes names her in left');
      // A later change of alice's devices is no longer bob's concern.
      const later = synced.next_batch as string;
      await ok1('PUT', `${V3}/devices/ALICETABLET`, alice, { display_name: 'tablet' });
      await hs1.runtime.services.sender.idle();
      const after = await syncOnce(hs2, bob, { since: later, timeout: 0 });
      t.notOk(after.device_lists?.changed?.includes(alice.user_id), 'her later changes are not reported');
    });
  });
}
