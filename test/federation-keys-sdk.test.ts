/**
 * Real clients across two servers: alice's matrix-js-sdk (Rust crypto) on hs1 downloads the
 * device keys of bob's matrix-js-sdk on hs2 through hs1's /keys/query (hs1 asking hs2 over
 * federation), and claims one of his one-time keys through /keys/claim when she encrypts for
 * him. The room key itself does not reach bob yet (m.direct_to_device is not sent: spec/e2ee.md).
 */
import './helpers/sdk-node.ts';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { CryptoHarness, within } from './helpers/crypto-client.ts';
import { startHomeservers } from './helpers/federation.ts';
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

    const roomId = await alice.createEncryptedRoom({ name: 'Across', invite: [bob.userId] });
    t.ok((await bob.waitForMembership(roomId, 'invite', 30_000)) !== undefined, 'bob is invited');
    await bob.client.joinRoom(roomId);
    t.ok(
      (await alice.waitForMember(roomId, bob.userId, 'join', 30_000)) !== undefined,
      'alice sees bob join',
    );
    t.ok((await alice.waitForEncryptedRoom(roomId)) !== undefined);

    const counts = () => hs2.runtime.services.keys.oneTimeKeyCounts(bob.userId, bob.deviceId);
    const before = (await counts()).signed_curve25519 ?? 0;
    t.ok(before > 0, `bob's device has one-time keys on hs2 (${before})`);
    const dropped = hs1.runtime.services.toDevice.droppedRemote;
    await alice.send(roomId, 'hello bob');
    const claims = h1.exchanges.filter((e) => e.who === 'alice' && e.path.endsWith('/keys/claim'));
    t.ok(claims.length > 0 && claims.every((e) => e.status === 200), "alice's client claimed a key (200)");
    t.ok(
      network.sent.some((r) => r.from === 'hs1.test' && r.uri === '/_matrix/federation/v1/user/keys/claim'),
      'hs1 claimed it on hs2 with /user/keys/claim',
    );
    let after = before;
    const used = await within(10_000, async () => {
      after = (await counts()).signed_curve25519 ?? 0;
      return after < before;
    });
    t.ok(used !== undefined, `one of bob's one-time keys was used (${before} -> ${after})`);
    t.ok(
      hs1.runtime.services.toDevice.droppedRemote > dropped,
      "the room key for bob's device reached the to-device seam (not delivered yet)",
    );
  });
}
