/**
 * Real clients across two servers: alice's matrix-js-sdk (Rust crypto) on hs1 downloads the
 * device keys of bob's matrix-js-sdk on hs2 through hs1's /keys/query (hs1 asking hs2 over
 * federation), and claims one of his one-time keys through /keys/claim when she encrypts for
 * him. The room key reaches bob's device as an m.direct_to_device EDU, and he decrypts her
 * message; his reply decrypts on her side. When bob logs in a second device, hs2 tells hs1 with
 * m.device_list_update, alice's client hears of it in /sync, and her next message reaches that
 * device too. Then both set up cross-signing: alice's keys reach bob's client (hs2 holds her join
 * only as send_join state, and still names her in bob's device_lists.changed), and bob verifies
 * her device by emoji (SAS) across the servers, after which her identity is verified for him.
 */
import './helpers/sdk-node.ts';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { CryptoHarness, verifyBySas, within } from './helpers/crypto-client.ts';
import { startHomeservers } from './helpers/federation.ts';
import { columnsHolding } from './helpers/plaintext-scan.ts';
import type { TestServer } from './helpers/server.ts';

t.setTimeout(600_000);

for (const backend of databaseBackends()) {
  t.test(`matrix-js-sdk clients see each other's keys across servers on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const urlOf = async (s: TestServer) => {
      await s.app.listen({ host: '127.0.0.1', port: 0 });
      return `http://127.0.0.1:${(s.app.server.address() as AddressInfo).port}`;
    };
    const h1 = new CryptoHarness(t, await urlOf(hs1));
    const h2 = new CryptoHarness(t, await urlOf(hs2));
    const alice = await h1.client('alice', await h1.register('alice'));
    const bob = await h2.client('bob', await h2.register('bob'));
    await Promise.all([alice.start(), bob.start()]);
    t.ok(
      (await within(20_000, () => alice.keysUploaded(h1) && bob.keysUploaded(h2))) !== undefined,
      'both devices publish their keys',
    );

    const devices = await alice.devicesOf(bob.userId);
    t.same(devices, [bob.deviceId], "alice's client downloads bob's device from hs2 through hs1");
    t.ok(
      network.sent.some((r) => r.from === 'hs1.test' && r.uri === '/_matrix/federation/v1/user/keys/query'),
      'hs1 asked hs2 with /user/keys/query',
    );
    const device = (await alice.crypto.getUserDeviceInfo([bob.userId], true))
      .get(bob.userId)
      ?.get(bob.deviceId);
    const published = await hs2.runtime.services.keys.userDevices(bob.userId);
    const own = published.devices.find((d) => d.device_id === bob.deviceId)?.keys.keys as
      | Record<string, string>
      | undefined;
    t.ok(own, 'bob published keys on hs2');
    t.equal(
      device?.getFingerprint(),
      own?.[`ed25519:${bob.deviceId}`],
      "alice's client holds bob's ed25519 key",
    );
    t.equal(device?.getIdentityKey(), own?.[`curve25519:${bob.deviceId}`], 'and his curve25519 key');

    // Every plaintext carries a marker found nowhere else, to look for on both servers.
    const marker = `plaintext-${randomBytes(8).toString('hex')}`;
    const roomId = await alice.createEncryptedRoom({ name: 'Across', invite: [bob.userId] });
    t.ok((await bob.waitForMembership(roomId, 'invite', 30_000)) !== undefined, 'bob is invited');
    await bob.client.joinRoom(roomId);
    t.ok(
      (await alice.waitForMember(roomId, bob.userId, 'join', 30_000)) !== undefined,
      'alice sees bob join',
    );
    t.ok((await alice.waitForEncryptedRoom(roomId)) !== undefined);

    // bob's client replaces a used one-time key as soon as the room key reaches it, so the count
    // may be back where it was: the keys themselves tell that one was claimed.
    const keyIds = async () =>
      (
        await hs2.runtime.database.db
          .selectFrom('e2e_one_time_keys')
          .select('key_id')
          .where('user_id', '=', bob.userId)
          .where('device_id', '=', bob.deviceId)
          .execute()
      ).map((r) => r.key_id);
    const before = await keyIds();
    t.ok(before.length > 0, `bob's device has one-time keys on hs2 (${before.length})`);
    const dropped = hs1.runtime.services.toDevice.droppedRemote;
    const hello = await alice.send(roomId, `hello bob ${marker}`);
    const claims = h1.exchanges.filter((e) => e.who === 'alice' && e.path.endsWith('/keys/claim'));
    t.ok(claims.length > 0 && claims.every((e) => e.status === 200), "alice's client claimed a key (200)");
    t.ok(
      network.sent.some((r) => r.from === 'hs1.test' && r.uri === '/_matrix/federation/v1/user/keys/claim'),
      'hs1 claimed it on hs2 with /user/keys/claim',
    );
    const used = await within(10_000, async () => {
      const now = new Set(await keyIds());
      return before.filter((id) => !now.has(id)).length === 1;
    });
    t.ok(used !== undefined, "one of bob's one-time keys was claimed");
    t.equal(hs1.runtime.services.toDevice.droppedRemote, dropped, 'nothing dropped at the to-device seam');
    const toDevice = (from: string) =>
      network.sent.filter(
        (r) =>
          r.from === from &&
          r.uri.includes('/federation/v1/send/') &&
          Buffer.from(r.body ?? '')
            .toString()
            .includes('"m.direct_to_device"'),
      ).length;

    const atBob = (await bob.waitForDecrypted(roomId, [hello], 60_000)).get(hello);
    t.same(
      atBob,
      { state: 'decrypted', type: 'm.room.message', body: `hello bob ${marker}` },
      'bob decrypts alice',
    );
    t.ok(toDevice('hs1.test') > 0, 'the room key crossed as m.direct_to_device');
    t.ok(
      bob.roomKeys.some((k) => k.roomId === roomId && k.sender === alice.userId && k.encrypted),
      "bob's device received the room key Olm-encrypted",
    );

    const reply = await bob.send(roomId, `hello alice ${marker}`);
    const atAlice = (await alice.waitForDecrypted(roomId, [reply], 60_000)).get(reply);
    t.same(
      atAlice,
      { state: 'decrypted', type: 'm.room.message', body: `hello alice ${marker}` },
      'alice decrypts bob',
    );
    t.ok(toDevice('hs2.test') > 0, "bob's room key crossed the other way");

    // bob's second device: hs2 sends m.device_list_update; alice's client learns of it by /sync.
    const updatesBefore = hs1.runtime.services.e2eeEdus.deviceListUpdates.applied;
    const bob2 = await h2.client('bob2', await h2.login(bob.userId));
    await bob2.start();
    t.ok(
      (await within(20_000, () => bob2.keysUploaded(h2))) !== undefined,
      "bob's second device publishes keys",
    );
    const known = await within(60_000, async () => {
      const map = await alice.crypto.getUserDeviceInfo([bob.userId]);
      return map.get(bob.userId)?.has(bob2.deviceId) === true;
    });
    t.ok(
      known !== undefined,
      "alice's client learns of bob's second device (device_lists.changed in her /sync)",
    );
    t.ok(
      hs1.runtime.services.e2eeEdus.deviceListUpdates.applied > updatesBefore,
      'hs1 applied the device list updates',
    );
    const later = await alice.send(roomId, `for both of your devices ${marker}`);
    const atBob2 = (await bob2.waitForDecrypted(roomId, [later], 60_000)).get(later);
    t.same(
      atBob2,
      { state: 'decrypted', type: 'm.room.message', body: `for both of your devices ${marker}` },
      "bob's second device decrypts alice's next message",
    );
    const atBob1 = (await bob.waitForDecrypted(roomId, [later], 60_000)).get(later);
    t.equal(atBob1?.state, 'decrypted', 'and so does his first');

    // Cross-signing across servers: alice's identity reaches bob's client (m.signing_key_update to
    // hs2, alice in bob's device_lists.changed although hs2 holds her join only as send_join
    // state), and bob verifies her device by emoji (SAS, to-device messages as
    // m.direct_to_device both ways), which makes her cross-signing identity verified for him.
    await alice.bootstrapCrossSigning();
    await bob.bootstrapCrossSigning();
    const signedByAlice = await within(60_000, async () => {
      const status = await bob.crypto.getDeviceVerificationStatus(alice.userId, alice.deviceId);
      return status?.signedByOwner === true;
    });
    t.ok(
      signedByAlice !== undefined,
      "bob's client learns alice's cross-signing keys, and sees her device signed by her",
    );
    t.notOk(
      (await bob.crypto.getUserVerificationStatus(alice.userId)).isCrossSigningVerified(),
      'alice is not verified for bob yet',
    );
    const { aEmoji, bEmoji } = await verifyBySas(bob, alice, 60_000);
    t.same(aEmoji, bEmoji, 'both devices showed the same seven emoji');
    const verified = await within(60_000, async () =>
      (await bob.crypto.getUserVerificationStatus(alice.userId)).isCrossSigningVerified(),
    );
    t.ok(verified !== undefined, "after SAS bob's client holds alice's identity as verified");
    const deviceStatus = await bob.crypto.getDeviceVerificationStatus(alice.userId, alice.deviceId);
    t.ok(deviceStatus?.crossSigningVerified, 'and her device as verified through cross-signing');
    // bob's signature of alice's master key is kept on hs2 and shown to him only.
    const aliceKeysForBob = await hs2.request('POST', '/_matrix/client/v3/keys/query', {
      token: bob.client.getAccessToken() ?? '',
      body: { device_keys: { [alice.userId]: [] } },
    });
    const master = aliceKeysForBob.json().master_keys?.[alice.userId] as
      | { signatures?: Record<string, unknown> }
      | undefined;
    t.ok(master?.signatures?.[bob.userId], "hs2 holds bob's signature on alice's master key");

    // Both servers stored and forwarded only ciphertext: no column of either database holds a
    // plaintext, nor did any federation request carry one.
    for (const [name, s] of [
      ['hs1', hs1],
      ['hs2', hs2],
    ] as const) {
      const { searched, found } = await columnsHolding(s.runtime.database.db, marker);
      t.ok(searched > 10, `${searched} columns searched on ${name}`);
      t.same(found, [], `no column on ${name} holds a plaintext`);
    }
    t.same(
      network.sent
        .filter((r) =>
          Buffer.from(r.body ?? '')
            .toString()
            .includes(marker),
        )
        .map((r) => r.uri),
      [],
      'no federation request carried a plaintext',
    );
  });
}
