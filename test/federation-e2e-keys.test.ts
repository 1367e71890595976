import t from 'tap';
import type { FederationError } from '../src/federation/index.ts';
import { currentPosition } from '../src/streams/positions.ts';
import { databaseBackends } from './helpers/backends.ts';
import { crossSigning, ed25519Pair, type Json, oneTimeKeys, sign, testDevice } from './helpers/e2ee.ts';
import { startHomeservers } from './helpers/federation.ts';
import { uploadCrossSigning } from './helpers/key-management.ts';
import { type Login, okCaller, syncOnce, type TestServer } from './helpers/server.ts';

/**
 * End-to-end keys across two homeservers (and a hostile third that the test scripts): the
 * federation endpoints hs2 serves for its users, hs1's /keys/query and /keys/claim reaching hs2,
 * the cache of remote device lists with its resync and the two EDU entry points, device list
 * changes of remote users in /sync and /keys/changes, to-device messages to remote users (the
 * seam, and m.direct_to_device behind it), signatures on a remote user's master key, and what a hostile server cannot do.
 */
const V3 = '/_matrix/client/v3';
const FED = '/_matrix/federation/v1';
const enc = encodeURIComponent;
t.setTimeout(600_000);

/** A scripted server: answers each federation request by path with what the test says. */
class ScriptedServer {
  readonly requests: Array<{ method: string; url: string; body: unknown }> = [];
  answers = new Map<string, { status: number; body: unknown }>();

  async inject(opts: { method: string; url: string; payload?: Buffer }) {
    const body = opts.payload ? JSON.parse(opts.payload.toString()) : undefined;
    this.requests.push({ method: opts.method, url: opts.url, body });
    const path = opts.url.split('?')[0]!;
    const answer = this.answers.get(`${opts.method} ${decodeURIComponent(path)}`) ?? {
      status: 404,
      body: { errcode: 'M_UNRECOGNIZED', error: 'no' },
    };
    return {
      statusCode: answer.status,
      headers: { 'content-type': 'application/json' },
      rawPayload: Buffer.from(JSON.stringify(answer.body)),
    };
  }
}

for (const backend of databaseBackends()) {
  t.test(`end-to-end keys across servers on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const eve = new ScriptedServer();
    network.servers.set('eve.test', eve);
    const alice = await hs1.register('alice', { deviceId: 'ALICEPHONE' });
    const mallory = await hs1.register('mallory', { deviceId: 'MALLORYDEV' });
    const bob = await hs2.register('bob', { deviceId: 'BOBLAPTOP' });
    const ok1 = okCaller(hs1);
    const ok2 = okCaller(hs2);
    const bobDevice = testDevice(bob);
    const aliceDevice = testDevice(alice);
    const bobCs = crossSigning(bob.user_id);
    const aliceCs = crossSigning(alice.user_id);
    const remoteKeys = hs1.runtime.services.remoteKeys;
    const db1 = hs1.runtime.database.db;

    await ok2('PUT', `${V3}/devices/${bob.device_id}`, bob, { display_name: "Bob's laptop" });
    await ok2('POST', `${V3}/keys/upload`, bob, {
      device_keys: bobDevice.deviceKeys,
      one_time_keys: oneTimeKeys(bobDevice, ['AAAAAQ', 'AAAAAg']),
      fallback_keys: oneTimeKeys(bobDevice, ['FFFF'], true),
    });
    await uploadCrossSigning(hs2, bob, bobCs.body);
    await ok1('POST', `${V3}/keys/upload`, alice, { device_keys: aliceDevice.deviceKeys });
    await uploadCrossSigning(hs1, alice, aliceCs.body);

    /** A signed request from hs1 to hs2, as hs1's federation client sends it. */
    const fed = (method: 'GET' | 'POST', path: string, body?: unknown) =>
      hs1.runtime.federation.client.request({
        destination: 'hs2.test',
        method,
        path,
        ...(body !== undefined ? { body: body as never } : {}),
      }) as Promise<Json>;
    const fedError = async (method: 'GET' | 'POST', path: string, body?: unknown) => {
      try {
        await fed(method, path, body);
      } catch (err) {
        return err as FederationError;
      }
      throw new Error('the request succeeded');
    };
    const query = (who: Login, users: Record<string, string[]>, s = hs1) =>
      okCaller(s)('POST', `${V3}/keys/query`, who, { device_keys: users });

    t.test('GET /user/devices serves a local user: stream_id, devices, cross-signing keys', async (t) => {
      const answer = await fed('GET', `${FED}/user/devices/${enc(bob.user_id)}`);
      t.equal(answer.user_id, bob.user_id);
      t.ok(Number.isInteger(answer.stream_id) && answer.stream_id > 0, 'a stream_id');
      t.equal(answer.devices.length, 1);
      t.equal(answer.devices[0].device_id, bob.device_id);
      t.equal(answer.devices[0].device_display_name, "Bob's laptop", 'display names are public (spec)');
      t.same(answer.devices[0].keys.keys, bobDevice.deviceKeys.keys);
      t.notOk('unsigned' in answer.devices[0].keys);
      t.same(answer.master_key.keys, bobCs.body.master_key.keys);
      t.same(answer.self_signing_key.keys, bobCs.body.self_signing_key.keys);
      t.notOk('user_signing_key' in answer, 'the user-signing key stays with its owner');
      const before = answer.stream_id;
      await ok2('PUT', `${V3}/devices/${bob.device_id}`, bob, { display_name: 'Laptop' });
      const after = await fed('GET', `${FED}/user/devices/${enc(bob.user_id)}`);
      t.equal(after.devices[0].device_display_name, 'Laptop');
      t.ok(after.stream_id >= before, 'stream_id does not go back');
      await ok2('PUT', `${V3}/devices/${bob.device_id}`, bob, { display_name: "Bob's laptop" });
    });

    t.test('GET /user/devices: forbidden and malformed', async (t) => {
      const foreign = await fedError('GET', `${FED}/user/devices/${enc(alice.user_id)}`);
      t.equal(foreign.status, 400);
      t.equal(foreign.errcode, 'M_INVALID_PARAM', 'a user of another server');
      const bad = await fedError('GET', `${FED}/user/devices/${enc('not a user')}`);
      t.equal(bad.errcode, 'M_INVALID_PARAM');
      const unknown = await fed('GET', `${FED}/user/devices/${enc('@nobody:hs2.test')}`);
      t.same(unknown.devices, [], 'an unknown local user has no devices');
      const unsigned = await hs2.request('GET', `${FED}/user/devices/${enc(bob.user_id)}`);
      t.equal(unsigned.statusCode, 401, 'X-Matrix is required');
      t.equal(unsigned.json().errcode, 'M_UNAUTHORIZED');
    });

    t.test('POST /user/keys/query serves local users only, without signatures of others', async (t) => {
      const answer = await fed('POST', `${FED}/user/keys/query`, {
        device_keys: { [bob.user_id]: [], [alice.user_id]: [] },
      });
      t.same(Object.keys(answer.device_keys), [bob.user_id], 'users of other servers are left out');
      const device = answer.device_keys[bob.user_id][bob.device_id];
      t.same(device.keys, bobDevice.deviceKeys.keys);
      t.equal(device.unsigned.device_display_name, "Bob's laptop");
      t.ok(answer.master_keys[bob.user_id]);
      t.ok(answer.self_signing_keys[bob.user_id]);
      t.notOk(answer.user_signing_keys, 'no user-signing keys over federation');
      const some = await fed('POST', `${FED}/user/keys/query`, { device_keys: { [bob.user_id]: ['OTHER'] } });
      t.same(some.device_keys[bob.user_id], {}, 'only the listed devices');
      const malformed = await fedError('POST', `${FED}/user/keys/query`, {
        device_keys: { [bob.user_id]: 'x' },
      });
      t.equal(malformed.status, 400);
      t.equal(malformed.errcode, 'M_BAD_JSON');
      const tooMany = await fedError('POST', `${FED}/user/keys/query`, {
        device_keys: Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`@u${i}:hs2.test`, []])),
      });
      t.equal(tooMany.status, 413);
    });

    t.test('POST /user/keys/claim claims keys of local users once each', async (t) => {
      const first = await fed('POST', `${FED}/user/keys/claim`, {
        one_time_keys: {
          [bob.user_id]: { [bob.device_id]: 'signed_curve25519' },
          [alice.user_id]: { X: 'y' },
        },
      });
      t.same(Object.keys(first.one_time_keys), [bob.user_id], 'users of other servers are left out');
      const [name] = Object.keys(first.one_time_keys[bob.user_id][bob.device_id]);
      t.equal(name, 'signed_curve25519:AAAAAQ', 'the oldest key');
      const malformed = await fedError('POST', `${FED}/user/keys/claim`, { one_time_keys: [] });
      t.equal(malformed.errcode, 'M_BAD_JSON');
    });

    t.test('hs1 queries and claims keys of bob on hs2 (no shared room: not cached)', async (t) => {
      const answer = await query(alice, { [bob.user_id]: [] });
      t.same(answer.failures, {});
      t.same(answer.device_keys[bob.user_id][bob.device_id].keys, bobDevice.deviceKeys.keys);
      t.equal(answer.device_keys[bob.user_id][bob.device_id].unsigned.device_display_name, "Bob's laptop");
      t.same(answer.master_keys[bob.user_id].keys, bobCs.body.master_key.keys);
      t.same(answer.self_signing_keys[bob.user_id].keys, bobCs.body.self_signing_key.keys);
      t.notOk(answer.user_signing_keys[bob.user_id]);
      const cached = await db1.selectFrom('remote_device_lists').selectAll().execute();
      t.same(cached, [], 'nothing cached for a user nobody here shares a room with');
      const claim = await ok1('POST', `${V3}/keys/claim`, alice, {
        one_time_keys: { [bob.user_id]: { [bob.device_id]: 'signed_curve25519' } },
      });
      t.same(claim.failures, {});
      t.same(Object.keys(claim.one_time_keys[bob.user_id][bob.device_id]), ['signed_curve25519:AAAAAg']);
      const fallback = await ok1('POST', `${V3}/keys/claim`, alice, {
        one_time_keys: { [bob.user_id]: { [bob.device_id]: 'signed_curve25519' } },
      });
      t.same(Object.keys(fallback.one_time_keys[bob.user_id][bob.device_id]), ['signed_curve25519:FFFF']);
    });

    t.test('a server that cannot be reached is listed in failures', async (t) => {
      network.cut('hs1.test', 'hs2.test');
      try {
        const answer = await query(alice, { [bob.user_id]: [], '@x:nowhere.test': [] });
        t.ok(answer.failures['hs2.test'], 'hs2 failed');
        t.ok(answer.failures['nowhere.test'], 'nowhere failed');
        t.notOk(answer.device_keys[bob.user_id]);
        const claim = await ok1('POST', `${V3}/keys/claim`, alice, {
          one_time_keys: { [bob.user_id]: { [bob.device_id]: 'signed_curve25519' } },
          timeout: 500,
        });
        t.ok(claim.failures['hs2.test']);
      } finally {
        network.heal('hs1.test', 'hs2.test');
      }
      const malformed = await hs1.request('POST', `${V3}/keys/query`, {
        token: alice.access_token,
        body: { device_keys: { [bob.user_id]: [] }, timeout: 'soon' },
      });
      t.equal(malformed.statusCode, 400);
      t.equal(malformed.json().errcode, 'M_BAD_JSON');
    });

    // alice and bob now share a room: bob's list is tracked and cached on hs1.
    let roomId = '';
    t.test("bob's join shows in alice's device_lists.changed; the cache is filled by a resync", async (t) => {
      const room = await ok1('POST', `${V3}/createRoom`, alice, { preset: 'public_chat' });
      roomId = room.room_id;
      const beforeJoin = await syncOnce(hs1, alice);
      await ok2('POST', `${V3}/join/${enc(roomId)}?via=hs1.test`, bob, {});
      const synced = await syncOnce(hs1, alice, { since: beforeJoin.next_batch, timeout: 0 });
      t.ok(synced.device_lists?.changed?.includes(bob.user_id), 'bob began to share a room');
      const changes = await ok1(
        'GET',
        `${V3}/keys/changes?from=${beforeJoin.next_batch}&to=${synced.next_batch}`,
        alice,
      );
      t.ok(changes.changed.includes(bob.user_id), '/keys/changes too');
      const sent = network.sent.length;
      const answer = await query(alice, { [bob.user_id]: [] });
      t.same(answer.failures, {});
      t.ok(answer.device_keys[bob.user_id][bob.device_id]);
      t.ok(
        network.sent.slice(sent).some((r) => r.uri.startsWith(`${FED}/user/devices/`)),
        'a resync through GET /user/devices',
      );
      const row = await db1.selectFrom('remote_device_lists').selectAll().executeTakeFirstOrThrow();
      t.equal(row.user_id, bob.user_id);
      t.equal(row.stale, false);
      const again = network.sent.length;
      const cachedAnswer = await query(alice, { [bob.user_id]: [] });
      t.equal(network.sent.length, again, 'the second query is served from the cache');
      t.same(cachedAnswer.device_keys, answer.device_keys);
      t.same(cachedAnswer.master_keys, answer.master_keys);
    });

    /** The stream_id hs1 holds for bob. */
    const cachedStreamId = async () =>
      Number(
        (
          await db1
            .selectFrom('remote_device_lists')
            .select('stream_id')
            .where('user_id', '=', bob.user_id)
            .executeTakeFirstOrThrow()
        ).stream_id,
      );
    const bob2 = await hs2.login('bob', { deviceId: 'BOBPHONE' });
    const bob2Device = testDevice(bob2);

    t.test('m.device_list_update feeds the cache; /sync reports the change', async (t) => {
      const streamId = await cachedStreamId();
      const since = (await syncOnce(hs1, alice)).next_batch;
      const outcome = await remoteKeys.applyDeviceListUpdate('hs2.test', {
        user_id: bob.user_id,
        device_id: bob2.device_id,
        device_display_name: 'Phone',
        stream_id: streamId + 1,
        prev_id: [streamId],
        keys: bob2Device.deviceKeys,
      });
      t.equal(outcome, 'applied');
      t.equal(await cachedStreamId(), streamId + 1);
      const synced = await syncOnce(hs1, alice, { since, timeout: 0 });
      t.same(synced.device_lists?.changed, [bob.user_id], "alice's sync reports bob's change");
      const mallorySync = await syncOnce(hs1, mallory, { since, timeout: 0 });
      t.notOk(mallorySync.device_lists?.changed?.includes(bob.user_id), 'mallory shares no room with bob');
      const sent = network.sent.length;
      const answer = await query(alice, { [bob.user_id]: [] });
      t.equal(network.sent.length, sent, 'from the cache');
      t.same(answer.device_keys[bob.user_id][bob2.device_id].keys, bob2Device.deviceKeys.keys);
      t.equal(answer.device_keys[bob.user_id][bob2.device_id].unsigned.device_display_name, 'Phone');
      t.equal(
        await remoteKeys.applyDeviceListUpdate('hs2.test', {
          user_id: bob.user_id,
          device_id: bob2.device_id,
          stream_id: streamId + 1,
          keys: bob2Device.deviceKeys,
        }),
        'ignored',
        'an update already applied',
      );
      const deleted = await remoteKeys.applyDeviceListUpdate('hs2.test', {
        user_id: bob.user_id,
        device_id: bob2.device_id,
        stream_id: streamId + 2,
        prev_id: [streamId + 1],
        deleted: true,
      });
      t.equal(deleted, 'applied');
      const after = await query(alice, { [bob.user_id]: [] });
      t.notOk(after.device_keys[bob.user_id][bob2.device_id], 'the deleted device is gone');
    });

    t.test('m.device_list_update: refused, and a gap or bad keys trigger a resync', async (t) => {
      const streamId = await cachedStreamId();
      const base = {
        user_id: bob.user_id,
        device_id: 'EVILDEV',
        stream_id: streamId + 1,
        prev_id: [streamId],
      };
      const evil = testDevice({ user_id: bob.user_id, device_id: 'EVILDEV' });
      t.equal(
        await remoteKeys.applyDeviceListUpdate('eve.test', { ...base, keys: evil.deviceKeys }),
        'refused',
        'from a server that is not bob’s',
      );
      t.equal(
        await remoteKeys.applyDeviceListUpdate('hs2.test', { ...base, stream_id: 'x' }),
        'refused',
        'malformed',
      );
      t.equal(await remoteKeys.applyDeviceListUpdate('hs2.test', 'nope'), 'refused');
      const forged = {
        ...evil.deviceKeys,
        keys: { ...evil.deviceKeys.keys, [`ed25519:EVILDEV`]: ed25519Pair().publicKey },
      };
      t.equal(
        await remoteKeys.applyDeviceListUpdate('hs2.test', { ...base, keys: forged }),
        'resync',
        'keys whose self-signature fails mark the list stale',
      );
      await remoteKeys.settled();
      let answer = await query(alice, { [bob.user_id]: [] });
      t.notOk(answer.device_keys[bob.user_id].EVILDEV, 'never served');
      t.same(
        Object.keys(answer.device_keys[bob.user_id]).sort(),
        [bob.device_id].sort(),
        'the resync brought hs2’s truth',
      );

      // bob's second device publishes keys on hs2; hs1 hears of an update with a gap.
      await ok2('POST', `${V3}/keys/upload`, bob2, { device_keys: bob2Device.deviceKeys });
      const now = await cachedStreamId();
      const since = (await syncOnce(hs1, alice)).next_batch;
      t.equal(
        await remoteKeys.applyDeviceListUpdate('hs2.test', {
          user_id: bob.user_id,
          device_id: 'SOMEDEV',
          stream_id: now + 10,
          prev_id: [now + 9],
        }),
        'resync',
        'a prev_id never seen is a gap',
      );
      await remoteKeys.settled();
      const row = await db1.selectFrom('remote_device_lists').selectAll().executeTakeFirstOrThrow();
      t.equal(row.stale, false, 'resynced');
      answer = await query(alice, { [bob.user_id]: [] });
      t.same(Object.keys(answer.device_keys[bob.user_id]).sort(), [bob.device_id, bob2.device_id].sort());
      t.notOk(answer.device_keys[bob.user_id].SOMEDEV, 'the update was not applied on its own');
      const synced = await syncOnce(hs1, alice, { since, timeout: 0 });
      t.ok(synced.device_lists?.changed?.includes(bob.user_id));
    });

    t.test('m.signing_key_update feeds the cache; forged keys are refused', async (t) => {
      const fresh = crossSigning(bob.user_id);
      t.equal(
        await remoteKeys.applySigningKeyUpdate('eve.test', {
          user_id: bob.user_id,
          master_key: fresh.body.master_key,
        }),
        'refused',
        'from a server that is not bob’s',
      );
      t.equal(
        await remoteKeys.applySigningKeyUpdate('hs2.test', {
          user_id: bob.user_id,
          master_key: { ...fresh.body.master_key, user_id: alice.user_id },
        }),
        'refused',
        'a master key of another user',
      );
      t.equal(
        await remoteKeys.applySigningKeyUpdate('hs2.test', {
          user_id: bob.user_id,
          self_signing_key: fresh.body.self_signing_key,
        }),
        'refused',
        'a self-signing key the cached master key did not sign',
      );
      let answer = await query(alice, { [bob.user_id]: [] });
      t.same(answer.master_keys[bob.user_id].keys, bobCs.body.master_key.keys, 'unchanged');
      const since = (await syncOnce(hs1, alice)).next_batch;
      t.equal(
        await remoteKeys.applySigningKeyUpdate('hs2.test', {
          user_id: bob.user_id,
          master_key: fresh.body.master_key,
          self_signing_key: fresh.body.self_signing_key,
        }),
        'applied',
      );
      answer = await query(alice, { [bob.user_id]: [] });
      t.same(answer.master_keys[bob.user_id].keys, fresh.body.master_key.keys);
      t.same(answer.self_signing_keys[bob.user_id].keys, fresh.body.self_signing_key.keys);
      const synced = await syncOnce(hs1, alice, { since, timeout: 0 });
      t.ok(synced.device_lists?.changed?.includes(bob.user_id));
      // Put hs2's truth back for what follows.
      await remoteKeys.markStale([bob.user_id]);
      answer = await query(alice, { [bob.user_id]: [] });
      t.same(
        answer.master_keys[bob.user_id].keys,
        bobCs.body.master_key.keys,
        'a stale list is resynced first',
      );
    });

    t.test("alice signs bob's master key with her user-signing key", async (t) => {
      const master = (await query(alice, { [bob.user_id]: [] })).master_keys[bob.user_id];
      const signed = sign(
        { ...master, signatures: {} },
        alice.user_id,
        `ed25519:${aliceCs.userSigning.publicKey}`,
        aliceCs.userSigning.seed,
      );
      const upload = await ok1('POST', `${V3}/keys/signatures/upload`, alice, {
        [bob.user_id]: { [bobCs.master.publicKey]: signed },
      });
      t.same(upload.failures, {});
      const seen = await query(alice, { [bob.user_id]: [] });
      t.equal(
        seen.master_keys[bob.user_id].signatures[alice.user_id][`ed25519:${aliceCs.userSigning.publicKey}`],
        signed.signatures[alice.user_id][`ed25519:${aliceCs.userSigning.publicKey}`],
        'alice sees her signature',
      );
      const byMallory = await query(mallory, { [bob.user_id]: [] });
      t.notOk(byMallory.master_keys[bob.user_id].signatures[alice.user_id], 'mallory does not');
      const onHs2 = await query(bob, { [bob.user_id]: [] }, hs2);
      t.notOk(
        onHs2.master_keys[bob.user_id].signatures?.[alice.user_id],
        'not passed on to hs2 (visible to its signer only)',
      );

      const forged = sign(
        { ...master, signatures: {} },
        alice.user_id,
        `ed25519:${aliceCs.userSigning.publicKey}`,
        ed25519Pair().seed,
      );
      const refused = await ok1('POST', `${V3}/keys/signatures/upload`, alice, {
        [bob.user_id]: { [bobCs.master.publicKey]: forged },
      });
      t.equal(refused.failures[bob.user_id][bobCs.master.publicKey].errcode, 'M_INVALID_SIGNATURE');
      const device = await ok1('POST', `${V3}/keys/signatures/upload`, alice, {
        [bob.user_id]: { [bob.device_id]: bobDevice.deviceKeys },
      });
      t.equal(
        device.failures[bob.user_id][bob.device_id].errcode,
        'M_NOT_FOUND',
        "another user's devices cannot be signed",
      );
    });

    t.test('to-device messages: local recipients stored, remote ones handed to the seam', async (t) => {
      const toDevice = hs1.runtime.services.toDevice;
      const dropped = toDevice.droppedRemote;
      await ok1('PUT', `${V3}/sendToDevice/m.test/t1`, alice, {
        messages: { [bob.user_id]: { [bob.device_id]: { n: 1 } }, [mallory.user_id]: { '*': { n: 2 } } },
      });
      t.equal(toDevice.droppedRemote, dropped, 'the remote message is not dropped: it goes out');
      let bobGot: Json[] = [];
      for (let i = 0; i < 200 && bobGot.length === 0; i++) {
        bobGot = ((await syncOnce(hs2, bob, { timeout: 0 })).to_device?.events ?? []) as Json[];
        if (bobGot.length === 0) await new Promise((r) => setTimeout(r, 50));
      }
      t.same(
        bobGot.map((e) => [e.sender, e.type, e.content]),
        [[alice.user_id, 'm.test', { n: 1 }]],
        'bob has it on hs2 (m.direct_to_device)',
      );
      const handed: unknown[] = [];
      t.teardown(() => toDevice.setRemoteDelivery(hs1.runtime.services.outboundE2eeEdus.toDevice));
      toDevice.setRemoteDelivery(async (m) => {
        handed.push(m);
      });
      await ok1('PUT', `${V3}/sendToDevice/m.test/t2`, alice, {
        messages: { [bob.user_id]: { '*': { n: 3 } } },
      });
      await ok1('PUT', `${V3}/sendToDevice/m.test/t2`, alice, {
        messages: { [bob.user_id]: { '*': { n: 3 } } },
      });
      t.same(
        handed,
        [
          {
            sender: alice.user_id,
            senderDevice: alice.device_id,
            type: 'm.test',
            txnId: 't2',
            destination: 'hs2.test',
            messages: { [bob.user_id]: { '*': { n: 3 } } },
          },
        ],
        'once per destination, not again for a repeated transaction ID',
      );
      const mallorySync = await syncOnce(hs1, mallory);
      t.same(
        mallorySync.to_device?.events?.map((e: Json) => e.content),
        [{ n: 2 }],
        'the local recipient has it',
      );
    });

    t.test('a hostile server cannot publish keys for users of another server', async (t) => {
      const eveUser = '@eve:eve.test';
      const eveDevice = testDevice({ user_id: eveUser, device_id: 'EVEDEV' });
      const badDevice = testDevice({ user_id: eveUser, device_id: 'BADSIG' });
      badDevice.deviceKeys.signatures[eveUser]['ed25519:BADSIG'] =
        eveDevice.deviceKeys.signatures[eveUser]['ed25519:EVEDEV'];
      const mismatched = testDevice({ user_id: eveUser, device_id: 'OTHERID' });
      const eveCs = crossSigning(eveUser);
      const evilBob = testDevice({ user_id: bob.user_id, device_id: 'EVILBOB' });
      const bobForgedMaster = crossSigning(bob.user_id);
      eve.answers.set(`POST ${FED}/user/keys/query`, {
        status: 200,
        body: {
          device_keys: {
            [eveUser]: {
              EVEDEV: eveDevice.deviceKeys,
              BADSIG: badDevice.deviceKeys,
              WRONGID: mismatched.deviceKeys,
            },
            [bob.user_id]: { EVILBOB: evilBob.deviceKeys },
          },
          master_keys: { [eveUser]: eveCs.body.master_key, [bob.user_id]: bobForgedMaster.body.master_key },
          self_signing_keys: { [eveUser]: crossSigning(eveUser).body.self_signing_key },
          user_signing_keys: { [eveUser]: eveCs.body.user_signing_key },
        },
      });
      const answer = await query(alice, { [eveUser]: [] });
      t.same(answer.failures, {});
      t.same(Object.keys(answer.device_keys), [eveUser], "eve's answer about bob is dropped");
      t.same(
        Object.keys(answer.device_keys[eveUser]),
        ['EVEDEV'],
        'a bad signature and a wrong device ID are dropped',
      );
      t.same(Object.keys(answer.master_keys), [eveUser]);
      t.same(answer.self_signing_keys, {}, 'a self-signing key her master key did not sign is dropped');
      t.notOk(answer.user_signing_keys[eveUser], 'never a remote user-signing key');
      const both = await query(alice, { [eveUser]: [], [bob.user_id]: [] });
      t.same(
        both.master_keys[bob.user_id].keys,
        bobCs.body.master_key.keys,
        "bob's keys still come from hs2",
      );
      t.notOk(both.device_keys[bob.user_id].EVILBOB);

      // A resync answer from eve naming another user, or without a stream_id, is unusable.
      eve.answers.set(`GET ${FED}/user/devices/${eveUser}`, {
        status: 200,
        body: { user_id: bob.user_id, stream_id: 1, devices: [] },
      });
      t.equal(await remoteKeys.resync(eveUser), false, 'an answer for another user');
      eve.answers.set(`GET ${FED}/user/devices/${eveUser}`, {
        status: 200,
        body: { user_id: eveUser, devices: [] },
      });
      t.equal(await remoteKeys.resync(eveUser), false, 'no stream_id');
      eve.answers.set(`GET ${FED}/user/devices/${eveUser}`, {
        status: 200,
        body: {
          user_id: eveUser,
          stream_id: 3,
          devices: [
            { device_id: 'EVEDEV', keys: eveDevice.deviceKeys, device_display_name: 'Eve' },
            { device_id: 'BADSIG', keys: badDevice.deviceKeys },
            { device_id: 'NOKEYS' },
          ],
          master_key: { ...eveCs.body.master_key, user_id: bob.user_id },
        },
      });
      t.equal(await remoteKeys.resync(eveUser), true);
      const rows = await db1
        .selectFrom('remote_device_keys')
        .select('device_id')
        .where('user_id', '=', eveUser)
        .execute();
      t.same(
        rows.map((r) => r.device_id),
        ['EVEDEV'],
        'only the device whose keys verify',
      );
      const cs = await db1
        .selectFrom('remote_cross_signing_keys')
        .selectAll()
        .where('user_id', '=', eveUser)
        .execute();
      t.same(cs, [], "a master key naming bob is not eve's");
      await db1.deleteFrom('remote_device_lists').where('user_id', '=', eveUser).execute();

      // Claims: only what was asked, of the algorithm asked, signed by the device when known.
      eve.answers.set(`POST ${FED}/user/keys/claim`, {
        status: 200,
        body: {
          one_time_keys: {
            [eveUser]: { EVEDEV: { 'curve25519:AAAA': 'abc' }, NOTASKED: oneTimeKeys(eveDevice, ['X']) },
            [bob.user_id]: { [bob.device_id]: oneTimeKeys(evilBob, ['EVIL']) },
          },
        },
      });
      const claim = await ok1('POST', `${V3}/keys/claim`, alice, {
        one_time_keys: { [eveUser]: { EVEDEV: 'signed_curve25519' } },
      });
      t.same(claim.one_time_keys, {}, 'nothing eve answered is usable');
      eve.answers.set(`POST ${FED}/user/keys/claim`, {
        status: 200,
        body: { one_time_keys: { [eveUser]: { EVEDEV: oneTimeKeys(eveDevice, ['GOOD']) } } },
      });
      const good = await ok1('POST', `${V3}/keys/claim`, alice, {
        one_time_keys: { [eveUser]: { EVEDEV: 'signed_curve25519' } },
      });
      t.same(Object.keys(good.one_time_keys[eveUser].EVEDEV), ['signed_curve25519:GOOD']);
      eve.answers.set(`POST ${FED}/user/keys/query`, { status: 200, body: { device_keys: 'garbage' } });
      const garbage = await query(alice, { [eveUser]: [] });
      t.same(garbage.device_keys[eveUser] ?? {}, {}, 'a malformed answer yields nothing');
      eve.answers.set(`POST ${FED}/user/keys/query`, {
        status: 500,
        body: { errcode: 'M_UNKNOWN', error: 'x' },
      });
      const failed = await query(alice, { [eveUser]: [] });
      t.equal(failed.failures['eve.test'].status, 500);
    });

    t.test("bob leaves: alice's device_lists.left, and the cache is dropped", async (t) => {
      const since = (await syncOnce(hs1, alice)).next_batch;
      await ok2('POST', `${V3}/rooms/${enc(roomId)}/leave`, bob, {});
      let synced: Json = {};
      for (let i = 0; i < 100; i++) {
        synced = await syncOnce(hs1, alice, { since, timeout: 0 });
        if (synced.device_lists?.left?.includes(bob.user_id)) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      t.same(synced.device_lists?.left, [bob.user_id]);
      const to = synced.next_batch;
      const changes = await ok1('GET', `${V3}/keys/changes?from=${since}&to=${to}`, alice);
      t.same(changes.left, [bob.user_id]);
      await query(alice, { [bob.user_id]: [] });
      const cached = await db1
        .selectFrom('remote_device_lists')
        .selectAll()
        .where('user_id', '=', bob.user_id)
        .execute();
      t.same(cached, [], 'no longer tracked: no longer cached');
      t.ok((await currentPosition(db1)) > 0);
    });
  });
}
