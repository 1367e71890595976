/**
 * The cross-signing delivery policy with real clients: matrix-js-sdk with its Rust crypto, over
 * HTTP on 127.0.0.1, with `to_device_encrypted_requires_cross_signing` on. alice (first device)
 * and bob set up cross-signing and talk in an encrypted room. alice signs in a second device (as
 * someone with her password would): bob's next message shares its room key with it too, but the
 * server drops that to-device message, so the new device gets no room key and cannot read it,
 * while her first device can. alice verifies the new device from the first by emoji (SAS); the
 * first device cross-signs it, and the next room keys (alice's, and bob's new session) reach it.
 */
import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { CryptoHarness, startHttpTestServer, verifyBySas, within } from './helpers/crypto-client.ts';

// Real clients with Rust crypto, a verification, both backends: minutes on a loaded machine.
t.setTimeout(900_000);

for (const backend of databaseBackends()) {
  t.test(`room keys only for cross-signed devices, with matrix-js-sdk, on ${backend.name}`, async (t) => {
    t.setTimeout(300_000);
    const { server, baseUrl, logs } = await startHttpTestServer(t, backend, {
      toDeviceEncryptedRequiresCrossSigning: true,
    });
    const { keys, toDevice } = server.runtime.services;
    const harness = new CryptoHarness(t, baseUrl);
    const alice = await harness.client('alice', await harness.register('alice'));
    const bob = await harness.client('bob', await harness.register('bob'));
    await Promise.all([alice.start(), bob.start()]);
    await alice.bootstrapCrossSigning();
    await bob.bootstrapCrossSigning();
    const crossSigned = async (userId: string, deviceId: string) =>
      (await keys.crossSignedDevices([userId])).get(userId)?.has(deviceId) === true;
    t.ok(
      (await within(
        15_000,
        async () =>
          (await crossSigned(alice.userId, alice.deviceId)) && (await crossSigned(bob.userId, bob.deviceId)),
      )) !== undefined,
      'both first devices are cross-signed by their own user',
    );

    const roomId = await alice.createEncryptedRoom({ name: 'Lab', invite: [bob.userId] });
    t.ok((await bob.waitForMembership(roomId, 'invite')) !== undefined);
    await bob.client.joinRoom(roomId);
    t.ok((await alice.waitForMember(roomId, bob.userId, 'join')) !== undefined);
    t.ok((await bob.waitForEncryptedRoom(roomId)) !== undefined);
    const first = await bob.send(roomId, 'hello from bob');
    const firstState = (await alice.waitForDecrypted(roomId, [first])).get(first);
    t.equal(firstState?.state, 'decrypted', "alice's cross-signed device reads bob's message");
    t.equal(toDevice.droppedUnverified, 0, 'nothing dropped between cross-signed devices');

    // A new device of alice's, not verified.
    const newDevice = await harness.client('alice2', await harness.login(alice.userId));
    await newDevice.start();
    t.ok(
      (await within(15_000, () => newDevice.keysUploaded(harness))) !== undefined,
      'the new device published its keys',
    );
    t.ok(
      (await within(15_000, async () => (await bob.devicesOf(alice.userId)).includes(newDevice.deviceId))) !==
        undefined,
      "bob's client knows the new device",
    );
    t.notOk(await crossSigned(alice.userId, newDevice.deviceId), 'the new device is not cross-signed');

    const dropped = toDevice.droppedUnverified;
    const second = await bob.send(roomId, 'second from bob');
    const session2 = await bob.sessionIdOf(roomId, second);
    t.equal(
      (await alice.waitForDecrypted(roomId, [second])).get(second)?.state,
      'decrypted',
      'the old device reads it',
    );
    t.ok(
      toDevice.droppedUnverified > dropped,
      "the server dropped the room key bob's client sent the new device",
    );
    t.ok((await newDevice.waitForMembership(roomId, 'join')) !== undefined);
    t.ok(
      (await within(15_000, () => newDevice.decryption(roomId, second).state !== 'absent')) !== undefined,
      'the new device has the message',
    );
    t.notOk(
      newDevice.roomKeys.some((k) => k.sessionId === session2),
      'but no room key for it',
    );
    t.not(newDevice.decryption(roomId, second).state, 'decrypted', 'and cannot read it');

    // alice verifies the new device from her first one; the first cross-signs it.
    await verifyBySas(alice, newDevice);
    t.ok(
      (await within(30_000, () => crossSigned(alice.userId, newDevice.deviceId))) !== undefined,
      'after verification the new device is cross-signed by her self-signing key',
    );

    // The next room keys reach it: alice's first device's, and bob's next session's.
    const fromAlice = await alice.send(roomId, 'from alice after verifying');
    t.equal(
      (await newDevice.waitForDecrypted(roomId, [fromAlice], 30_000)).get(fromAlice)?.state,
      'decrypted',
      "the verified device reads alice's next message",
    );
    await bob.crypto.forceDiscardSession(roomId);
    const fromBob = await bob.send(roomId, 'third from bob');
    t.equal(
      (await newDevice.waitForDecrypted(roomId, [fromBob], 30_000)).get(fromBob)?.state,
      'decrypted',
      "and bob's next session",
    );

    const tokens = harness.accessTokens();
    t.notOk(
      logs.some((line) => tokens.some((tok) => line.includes(tok))),
      'no access token in the server log',
    );
  });
}
