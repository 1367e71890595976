import t from 'tap';
import type { JsonObject } from '../src/protocol/json.ts';
import { databaseBackends } from './helpers/backends.ts';
import { crossSigning, type Json, sign, testDevice } from './helpers/e2ee.ts';
import { hostileServer, startHomeservers } from './helpers/federation.ts';
import { uploadCrossSigning } from './helpers/key-management.ts';
import { type Login, okCaller, syncOnce, type TestServer } from './helpers/server.ts';
import { until } from './helpers/wait.ts';

/**
 * The end-to-end encryption EDUs across servers (server-server API: Device Management,
 * End-to-End Encryption, Send-to-device messaging): alice on hs1 and bob on hs2 share a room.
 * bob's device changes (rename, a new login, its keys, a logout) reach hs1's cache of his
 * device list as m.device_list_update EDUs with a stream_id/prev_id chain, and alice's /sync
 * hears of them; his cross-signing keys arrive as m.signing_key_update; to-device messages cross
 * both ways as m.direct_to_device, once each, with a message_id of their own per destination.
 * eve's server may not speak for bob, nor deliver to users who are not hs1's; malformed EDUs are
 * dropped and the transaction still answers 200; an update made while hs1 is unreachable
 * arrives once it is back.
 */
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
t.setTimeout(600_000);

const untilLong = <T>(what: string, check: () => Promise<T | undefined | false>) =>
  until(what, check, 60_000);

for (const backend of databaseBackends()) {
  t.test(`end-to-end encryption EDUs across servers on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const eve = hostileServer(network, 'eve.test');
    const ok1 = okCaller(hs1);
    const ok2 = okCaller(hs2);
    const alice = await hs1.register('alice', { deviceId: 'ALICEPHONE' });
    const bob = await hs2.register('bob', { deviceId: 'BOBLAPTOP' });
    const db1 = hs1.runtime.database.db;
    const db2 = hs2.runtime.database.db;
    await ok1('POST', `${V3}/keys/upload`, alice, { device_keys: testDevice(alice).deviceKeys });
    const bobDevice = testDevice(bob);
    await ok2('POST', `${V3}/keys/upload`, bob, { device_keys: bobDevice.deviceKeys });
    const cs = crossSigning(bob.user_id);
    const roomId = (await ok1('POST', `${V3}/createRoom`, alice, { preset: 'public_chat' }))
      .room_id as string;
    await ok2('POST', `${V3}/join/${enc(roomId)}?via=hs1.test`, bob, {});

    /** EDUs of `type` that `from` sent to `to` so far, in order. */
    const eduSent = (from: string, to: string, type: string): JsonObject[] =>
      network.sent
        .filter((r) => r.from === from && r.destination === to && r.uri.includes('/federation/v1/send/'))
        .flatMap((r) => (JSON.parse(Buffer.from(r.body ?? '').toString() || '{}').edus ?? []) as JsonObject[])
        .filter((e) => e.edu_type === type)
        .map((e) => e.content as JsonObject);
    const resyncs = () =>
      network.sent.filter(
        (r) => r.from === 'hs1.test' && r.uri === `/_matrix/federation/v1/user/devices/${enc(bob.user_id)}`,
      ).length;
    /** hs1's cached copy of bob's devices: device ID -> display name (null: none). */
    const cachedBob = async () =>
      Object.fromEntries(
        (
          await db1
            .selectFrom('remote_device_keys')
            .select(['device_id', 'display_name', 'key_json'])
            .where('user_id', '=', bob.user_id)
            .orderBy('device_id')
            .execute()
        ).map((r) => [r.device_id, { name: r.display_name, keys: r.key_json !== null }]),
      );
    const query = (who: Login, userId: string) =>
      ok1('POST', `${V3}/keys/query`, who, { device_keys: { [userId]: [] } });

    // hs1 tracks bob (they share a room) and fills its cache with a first resync.
    await query(alice, bob.user_id);
    t.same(Object.keys(await cachedBob()), ['BOBLAPTOP'], 'hs1 holds bob’s device after a resync');
    const resyncsBefore = resyncs();

    t.test('a device rename goes out as m.device_list_update and reaches alice', async (t) => {
      const since = (await syncOnce(hs1, alice)).next_batch;
      const bobSince = (await syncOnce(hs2, bob)).next_batch;
      await ok2('PUT', `${V3}/devices/BOBLAPTOP`, bob, { display_name: "Bob's laptop" });
      const own = await syncOnce(hs2, bob, { since: bobSince, timeout: 0 });
      t.ok(own.device_lists?.changed?.includes(bob.user_id), 'a rename is a device list change on hs2 too');
      await untilLong(
        'the new name cached on hs1',
        async () => (await cachedBob()).BOBLAPTOP?.name === "Bob's laptop",
      );
      const updates = eduSent('hs2.test', 'hs1.test', 'm.device_list_update');
      const last = updates.at(-1)!;
      t.match(last, { user_id: bob.user_id, device_id: 'BOBLAPTOP', device_display_name: "Bob's laptop" });
      t.type(last.stream_id, 'number');
      t.ok(last.keys, 'with the device keys');
      t.equal(resyncs(), resyncsBefore, 'applied without a resync');
      const synced = await syncOnce(hs1, alice, { since, timeout: 0 });
      t.ok(synced.device_lists?.changed?.includes(bob.user_id), "bob is in alice's device_lists.changed");
      const answer = await query(alice, bob.user_id);
      t.equal(answer.device_keys[bob.user_id].BOBLAPTOP.unsigned.device_display_name, "Bob's laptop");
      // Renaming to the same name changes nothing.
      const count = updates.length;
      await ok2('PUT', `${V3}/devices/BOBLAPTOP`, bob, { display_name: "Bob's laptop" });
      await hs2.runtime.services.sender.idle();
      t.equal(
        eduSent('hs2.test', 'hs1.test', 'm.device_list_update').length,
        count,
        'no update for no change',
      );
    });

    t.test('a new login, its keys and its logout: one chain of updates', async (t) => {
      const before = eduSent('hs2.test', 'hs1.test', 'm.device_list_update').length;
      const phone = await hs2.login('bob', { deviceId: 'BOBPHONE' });
      await untilLong('the new device on hs1', async () => (await cachedBob()).BOBPHONE !== undefined);
      t.same((await cachedBob()).BOBPHONE, { name: null, keys: false }, 'without keys yet');
      await ok2('POST', `${V3}/keys/upload`, phone, { device_keys: testDevice(phone).deviceKeys });
      await untilLong('its keys on hs1', async () => (await cachedBob()).BOBPHONE?.keys === true);
      const answer = await query(alice, bob.user_id);
      t.same(Object.keys(answer.device_keys[bob.user_id]).sort(), ['BOBLAPTOP', 'BOBPHONE']);
      await ok2('POST', `${V3}/logout`, phone, {});
      await untilLong('the device gone on hs1', async () => (await cachedBob()).BOBPHONE === undefined);
      const chain = eduSent('hs2.test', 'hs1.test', 'm.device_list_update').slice(before);
      t.same(
        chain.map((e) => [e.device_id, e.deleted === true, e.keys !== undefined]),
        [
          ['BOBPHONE', false, false],
          ['BOBPHONE', false, true],
          ['BOBPHONE', true, false],
        ],
        'new device, its keys, its deletion',
      );
      const all = eduSent('hs2.test', 'hs1.test', 'm.device_list_update');
      for (let i = 1; i < all.length; i++) {
        t.ok((all[i]!.stream_id as number) > (all[i - 1]!.stream_id as number), 'stream_ids rise');
        t.same(all[i]!.prev_id, [all[i - 1]!.stream_id], 'each names the one before');
      }
      t.equal(resyncs(), resyncsBefore, 'all applied without a resync');
      const devices = await hs2.runtime.services.keys.userDevices(bob.user_id);
      t.ok(
        devices.stream_id >= (all.at(-1)!.stream_id as number),
        'GET /user/devices is not behind the updates',
      );
    });

    t.test('only the changes of a server’s own users are sent', async (t) => {
      // hs2 records alice's changes too (it caches her list), but never sends them anywhere.
      await ok1('PUT', `${V3}/devices/ALICEPHONE`, alice, { display_name: "Alice's phone" });
      await untilLong('alice’s update reached hs2', async () =>
        eduSent('hs1.test', 'hs2.test', 'm.device_list_update').some(
          (e) => e.device_display_name === "Alice's phone",
        ),
      );
      await hs2.runtime.services.sender.idle();
      for (const [from, to, own] of [
        ['hs1.test', 'hs2.test', alice.user_id],
        ['hs2.test', 'hs1.test', bob.user_id],
      ] as const) {
        const users = new Set(eduSent(from, to, 'm.device_list_update').map((e) => e.user_id));
        t.same([...users], [own], `${from} sent updates of its own users only`);
      }
    });

    t.test('cross-signing keys go out as m.signing_key_update', async (t) => {
      await uploadCrossSigning(hs2, bob, cs.body);
      const update = await untilLong('the update on hs1', async () =>
        eduSent('hs2.test', 'hs1.test', 'm.signing_key_update').at(-1),
      );
      t.same(
        Object.keys(update).sort(),
        ['master_key', 'self_signing_key', 'user_id'],
        'never the user-signing key',
      );
      await untilLong('the keys cached on hs1', async () => {
        const rows = await db1
          .selectFrom('remote_cross_signing_keys')
          .select(['usage', 'public_key'])
          .where('user_id', '=', bob.user_id)
          .orderBy('usage')
          .execute();
        return rows.length === 2 && rows[0]!.public_key === cs.master.publicKey;
      });
      const answer = await query(alice, bob.user_id);
      t.same(answer.master_keys[bob.user_id].keys, cs.body.master_key.keys);
      t.same(answer.self_signing_keys[bob.user_id].keys, cs.body.self_signing_key.keys);
      t.equal(resyncs(), resyncsBefore, 'no resync needed');
      t.equal(hs1.runtime.services.e2eeEdus.signingKeyUpdates.refused, 0);
    });

    t.test('own signatures go out: the signed device and the signed master key', async (t) => {
      const lists = eduSent('hs2.test', 'hs1.test', 'm.device_list_update').length;
      const keys = eduSent('hs2.test', 'hs1.test', 'm.signing_key_update').length;
      const sskId = `ed25519:${cs.selfSigning.publicKey}`;
      const signedDevice = sign(bobDevice.deviceKeys, bob.user_id, sskId, cs.selfSigning.seed);
      const signedMaster = sign(cs.body.master_key, bob.user_id, 'ed25519:BOBLAPTOP', bobDevice.ed25519.seed);
      const res = await ok2('POST', `${V3}/keys/signatures/upload`, bob, {
        [bob.user_id]: { BOBLAPTOP: signedDevice, [cs.master.publicKey]: signedMaster },
      });
      t.same(res.failures, {});
      const device = await untilLong('the signed device sent', async () =>
        eduSent('hs2.test', 'hs1.test', 'm.device_list_update').slice(lists).at(0),
      );
      t.equal(device.device_id, 'BOBLAPTOP');
      t.ok((device.keys as Json).signatures[bob.user_id][sskId], 'with the self-signing signature');
      const master = await untilLong('the signed master key sent', async () =>
        eduSent('hs2.test', 'hs1.test', 'm.signing_key_update').slice(keys).at(0),
      );
      t.ok(
        (master.master_key as Json).signatures[bob.user_id]['ed25519:BOBLAPTOP'],
        "with the device's signature",
      );
      const answer = await untilLong('both on hs1', async () => {
        const a = await query(alice, bob.user_id);
        // Either update may arrive first: wait, without failing, until both have.
        return a.device_keys?.[bob.user_id]?.BOBLAPTOP?.signatures?.[bob.user_id]?.[sskId] &&
          a.master_keys?.[bob.user_id]?.signatures?.[bob.user_id]?.['ed25519:BOBLAPTOP']
          ? a
          : undefined;
      });
      t.ok(answer, "alice's /keys/query on hs1 shows both signatures");
      t.equal(resyncs(), resyncsBefore, 'applied without a resync');
    });

    t.test('to-device messages cross both ways, each with a message_id per destination', async (t) => {
      await ok1('PUT', `${V3}/sendToDevice/m.test/txn1`, alice, {
        messages: { [bob.user_id]: { BOBLAPTOP: { to: 'bob' } }, '@eve:eve.test': { '*': { to: 'eve' } } },
      });
      const got = await untilLong('bob has it', async () => {
        const events = (await syncOnce(hs2, bob, { timeout: 0 })).to_device?.events as Json[] | undefined;
        return events?.find((e) => e.type === 'm.test');
      });
      t.same([got.sender, got.content], [alice.user_id, { to: 'bob' }]);
      const toHs2 = eduSent('hs1.test', 'hs2.test', 'm.direct_to_device').at(-1)!;
      t.same(toHs2.messages, { [bob.user_id]: { BOBLAPTOP: { to: 'bob' } } }, "only hs2's users go to hs2");
      t.match(toHs2, { sender: alice.user_id, type: 'm.test' });
      // eve.test cannot take transactions: the EDU for her waits in hs1's queue.
      const queued = await db1
        .selectFrom('federation_queued_edus')
        .select('content')
        .where('destination', '=', 'eve.test')
        .execute();
      t.equal(queued.length, 1);
      const toEve = queued[0]!.content as JsonObject;
      t.same(toEve.messages, { '@eve:eve.test': { '*': { to: 'eve' } } });
      t.not(toEve.message_id, toHs2.message_id, 'one message_id per destination');
      t.not(toHs2.message_id, 'txn1', 'not the bare transaction ID');

      await ok2('PUT', `${V3}/sendToDevice/m.test/txn1`, bob, {
        messages: { [alice.user_id]: { '*': { to: 'alice' } } },
      });
      const back = await untilLong('alice has it', async () => {
        const events = (await syncOnce(hs1, alice, { timeout: 0 })).to_device?.events as Json[] | undefined;
        return events?.find((e) => e.type === 'm.test');
      });
      t.same([back.sender, back.content], [bob.user_id, { to: 'alice' }]);
    });

    const toDeviceOf = async (s: TestServer, who: Login) =>
      ((await syncOnce(s, who, { timeout: 0 })).to_device?.events ?? []) as Json[];

    t.test('a message sent twice by its server is delivered once', async (t) => {
      const edu = {
        edu_type: 'm.direct_to_device',
        content: {
          sender: '@eve:eve.test',
          type: 'm.test.eve',
          message_id: 'eve-1',
          messages: { [bob.user_id]: { '*': { hello: 'bob' } }, '@carol:hs1.test': { '*': { no: 1 } } },
        },
      };
      for (const txn of ['e1', 'e2']) {
        const res = await eve.sendEdus(hs2, txn, [edu]);
        t.equal(res.statusCode, 200, res.body);
      }
      const events = (await toDeviceOf(hs2, bob)).filter((e) => e.type === 'm.test.eve');
      t.same(
        events.map((e) => [e.sender, e.content]),
        [['@eve:eve.test', { hello: 'bob' }]],
        'once, from eve; the user of hs1 is passed over',
      );
    });

    t.test('eve may not speak for bob, nor deliver to users of another server', async (t) => {
      const counts = hs1.runtime.services.e2eeEdus;
      const refusedLists = counts.deviceListUpdates.refused;
      const refusedKeys = counts.signingKeyUpdates.refused;
      const refusedToDevice = counts.toDeviceRefused;
      const cachedBefore = await cachedBob();
      const forged = testDevice({ user_id: bob.user_id, device_id: 'EVILBOB' });
      const res = await eve.sendEdus(hs1, 'forged', [
        {
          edu_type: 'm.device_list_update',
          content: {
            user_id: bob.user_id,
            device_id: 'EVILBOB',
            stream_id: 1_000_000,
            prev_id: [],
            keys: forged.deviceKeys,
          },
        },
        {
          edu_type: 'm.device_list_update',
          content: { user_id: bob.user_id, device_id: 'BOBLAPTOP', stream_id: 1_000_001, deleted: true },
        },
        {
          edu_type: 'm.signing_key_update',
          content: { user_id: bob.user_id, ...crossSigning(bob.user_id).body },
        },
        {
          edu_type: 'm.direct_to_device',
          content: {
            sender: bob.user_id,
            type: 'm.test.forged',
            message_id: 'f1',
            messages: { [alice.user_id]: { '*': { from: 'not bob' } } },
          },
        },
      ]);
      t.equal(res.statusCode, 200, res.body);
      t.same(res.json(), { pdus: {} });
      t.equal(counts.deviceListUpdates.refused - refusedLists, 2, 'both device list updates refused');
      t.equal(counts.signingKeyUpdates.refused - refusedKeys, 1, 'the signing key update refused');
      t.equal(counts.toDeviceRefused - refusedToDevice, 1, 'the to-device message refused');
      t.same(await cachedBob(), cachedBefore, "hs1's copy of bob is untouched");
      const answer = await query(alice, bob.user_id);
      t.notOk(answer.device_keys[bob.user_id].EVILBOB);
      t.notOk(
        (await toDeviceOf(hs1, alice)).some((e) => e.type === 'm.test.forged'),
        'nothing delivered in bob’s name',
      );
    });

    t.test('malformed E2EE EDUs are dropped; the transaction still answers 200', async (t) => {
      const dispatcher = hs1.runtime.services.federationRooms.edus;
      const counts = hs1.runtime.services.e2eeEdus;
      const refusedLists = counts.deviceListUpdates.refused;
      const refusedKeys = counts.signingKeyUpdates.refused;
      const ignoredKeys = counts.signingKeyUpdates.ignored;
      const refusedToDevice = counts.toDeviceRefused;
      const eveUser = '@eve:eve.test';
      const res = await eve.sendEdus(hs1, 'malformed', [
        { edu_type: 'm.device_list_update', content: { user_id: 5 } },
        { edu_type: 'm.device_list_update', content: { user_id: eveUser, device_id: 'D', stream_id: 'one' } },
        {
          edu_type: 'm.device_list_update',
          content: { user_id: eveUser, device_id: 'D', stream_id: 1, prev_id: 'x' },
        },
        { edu_type: 'm.signing_key_update', content: { user_id: [] } },
        { edu_type: 'm.signing_key_update', content: { user_id: eveUser, master_key: 'not a key' } },
        { edu_type: 'm.direct_to_device', content: { sender: eveUser, type: 'm.x', message_id: 'm1' } },
        {
          edu_type: 'm.direct_to_device',
          content: { sender: eveUser, type: '', message_id: 'm2', messages: {} },
        },
        {
          edu_type: 'm.direct_to_device',
          content: { sender: eveUser, type: 'm.x', message_id: 'm3', messages: { [alice.user_id]: 'x' } },
        },
        {
          edu_type: 'm.direct_to_device',
          content: {
            sender: eveUser,
            type: 'm.x',
            message_id: 'm4',
            messages: { 'not a user': { '*': {} } },
          },
        },
        {
          edu_type: 'm.direct_to_device',
          content: {
            sender: eveUser,
            type: 'm.x',
            message_id: 'm5',
            messages: { [alice.user_id]: { '*': 7 } },
          },
        },
        // A secret must travel Olm-encrypted: a plaintext one is not delivered.
        {
          edu_type: 'm.direct_to_device',
          content: {
            sender: eveUser,
            type: 'm.secret.send',
            message_id: 'm6',
            messages: { [alice.user_id]: { '*': { secret: 'x', request_id: 'r' } } },
          },
        },
      ]);
      t.equal(res.statusCode, 200, res.body);
      t.same(res.json(), { pdus: {} });
      t.equal(counts.deviceListUpdates.refused - refusedLists, 3);
      t.equal(counts.signingKeyUpdates.refused - refusedKeys, 1);
      t.equal(
        counts.signingKeyUpdates.ignored - ignoredKeys,
        1,
        'an update for a user nobody here shares a room with is ignored',
      );
      t.equal(counts.toDeviceRefused - refusedToDevice, 5);
      t.equal(dispatcher.failed, 0, 'no handler failed');
      const events = await toDeviceOf(hs1, alice);
      t.notOk(
        events.some((e) => e.sender === eveUser),
        'nothing of eve delivered',
      );
    });

    t.test('an update made while hs1 is unreachable arrives once it is back', async (t) => {
      await hs2.runtime.services.sender.idle();
      network.cut('hs1.test', 'hs2.test');
      await ok2('PUT', `${V3}/devices/BOBLAPTOP`, bob, { display_name: 'offline rename' });
      await untilLong('hs2 failed to reach hs1', async () => {
        const row = await db2
          .selectFrom('federation_destinations')
          .select('failure_count')
          .where('destination', '=', 'hs1.test')
          .executeTakeFirst();
        return (row?.failure_count ?? 0) > 0;
      });
      const waiting = await db2
        .selectFrom('federation_queued_edus')
        .select('edu_type')
        .where('destination', '=', 'hs1.test')
        .execute();
      t.same(
        waiting.map((r) => r.edu_type),
        ['m.device_list_update'],
        'the update waits in the queue',
      );
      network.heal('hs1.test', 'hs2.test');
      // hs1 contacting hs2 ends hs2's backoff (as any request from a server does).
      await ok1('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/wake`, alice, {
        msgtype: 'm.text',
        body: 'wake up',
      });
      await untilLong(
        'the rename cached on hs1',
        async () => (await cachedBob()).BOBLAPTOP?.name === 'offline rename',
      );
      t.equal(resyncs(), resyncsBefore, 'no gap: no resync');
    });

    t.test('a change nobody was sent shows as a gap: the next update resyncs', async (t) => {
      await ok2('POST', `${V3}/rooms/${enc(roomId)}/leave`, bob, {});
      await untilLong('bob left on hs1', async () => {
        const row = await db1
          .selectFrom('memberships')
          .select('membership')
          .where('room_id', '=', roomId)
          .where('user_id', '=', bob.user_id)
          .executeTakeFirst();
        return row?.membership === 'leave';
      });
      const sentBefore = eduSent('hs2.test', 'hs1.test', 'm.device_list_update').length;
      await ok2('PUT', `${V3}/devices/BOBLAPTOP`, bob, { display_name: 'while apart' });
      await hs2.runtime.services.sender.idle();
      t.equal(
        eduSent('hs2.test', 'hs1.test', 'm.device_list_update').length,
        sentBefore,
        'nobody shares a room with bob: nothing sent',
      );
      await ok2('POST', `${V3}/join/${enc(roomId)}?via=hs1.test`, bob, {});
      const gaps = hs1.runtime.services.e2eeEdus.deviceListUpdates.resync;
      await ok2('PUT', `${V3}/devices/BOBLAPTOP`, bob, { display_name: 'back' });
      await untilLong('the name on hs1', async () => (await cachedBob()).BOBLAPTOP?.name === 'back');
      t.equal(hs1.runtime.services.e2eeEdus.deviceListUpdates.resync, gaps + 1, 'the update showed a gap');
      const last = eduSent('hs2.test', 'hs1.test', 'm.device_list_update').at(-1)!;
      const previous = eduSent('hs2.test', 'hs1.test', 'm.device_list_update').at(-2)!;
      t.ok(
        (last.prev_id as number[])[0]! > (previous.stream_id as number),
        'prev_id names the update hs1 missed',
      );
      t.ok(resyncs() > resyncsBefore, 'hs1 resynced');
    });
  });
}
