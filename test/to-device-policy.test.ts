import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import {
  type CrossSigning,
  crossSigning,
  type Json,
  sign,
  type TestDevice,
  testDevice,
} from './helpers/e2ee.ts';
import { uploadCrossSigning } from './helpers/key-management.ts';
import { type Login, startTestServer, syncOnce, type TestServer } from './helpers/server.ts';

// Both backends on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);

const V3 = '/_matrix/client/v3';

async function uploadDevice(s: TestServer, who: Login): Promise<TestDevice> {
  const device = testDevice(who);
  const r = await s.request('POST', `${V3}/keys/upload`, {
    token: who.access_token,
    body: { device_keys: device.deviceKeys },
  });
  if (r.statusCode !== 200) throw new Error(`keys/upload ${r.statusCode} ${r.body}`);
  return device;
}

/** Signs the device with the user's self-signing key and uploads the signature (as a verifying client does). */
async function crossSign(s: TestServer, signer: Login, cs: CrossSigning, device: TestDevice) {
  const signed = sign(
    device.deviceKeys,
    device.userId,
    `ed25519:${cs.selfSigning.publicKey}`,
    cs.selfSigning.seed,
  );
  const r = await s.request('POST', `${V3}/keys/signatures/upload`, {
    token: signer.access_token,
    body: { [device.userId]: { [device.deviceId]: signed } },
  });
  if (r.statusCode !== 200 || Object.keys(r.json().failures ?? {}).length > 0) {
    throw new Error(`signatures/upload ${r.statusCode} ${r.body}`);
  }
}

/** What each device finds in its to-device inbox, by type. */
async function inbox(s: TestServer, who: Login): Promise<string[]> {
  const body = await syncOnce(s, who, { timeout: 0 });
  return ((body.to_device?.events ?? []) as Json[]).map((e) => e.type as string);
}

const encrypted = { algorithm: 'm.olm.v1.curve25519-aes-sha2', sender_key: 'k', ciphertext: {} };

/**
 * The cross-signing delivery policy, through raw HTTP: alice's laptop is cross-signed by her
 * self-signing key; her new phone is not; her tablet was signed by a self-signing key she has
 * since replaced. bob sends encrypted and plain to-device messages to all her devices: only the
 * laptop gets the encrypted one, every device the plain one. With the policy off (the default)
 * every device gets both.
 */
for (const backend of databaseBackends()) {
  for (const policy of [true, false]) {
    t.test(`encrypted to-device with the policy ${policy ? 'on' : 'off'} on ${backend.name}`, async (t) => {
      const s = await startTestServer(t, backend, { toDeviceEncryptedRequiresCrossSigning: policy });
      const laptop = await s.register('alice');
      const phone = await s.login('alice');
      const tablet = await s.login('alice');
      const bob = await s.register('bob');
      const devices = {
        laptop: await uploadDevice(s, laptop),
        phone: await uploadDevice(s, phone),
        tablet: await uploadDevice(s, tablet),
      };
      const first = crossSigning(laptop.user_id);
      await uploadCrossSigning(s, laptop, first.body);
      await crossSign(s, laptop, first, devices.tablet);
      // A reset: new cross-signing keys; the tablet's signature is by the old self-signing key.
      const second = crossSigning(laptop.user_id);
      await uploadCrossSigning(s, laptop, second.body);
      await crossSign(s, laptop, second, devices.laptop);
      const signed = await s.runtime.services.keys.crossSignedDevices([laptop.user_id, bob.user_id]);
      t.same(
        [...(signed.get(laptop.user_id) ?? [])],
        [laptop.device_id],
        'only the laptop counts as cross-signed',
      );
      t.notOk(signed.has(bob.user_id), 'bob has no self-signing key');

      for (const [type, content, txn] of [
        ['m.room.encrypted', encrypted, 't1'],
        ['m.test.plain', { n: 1 }, 't2'],
      ] as const) {
        const r = await s.request('PUT', `${V3}/sendToDevice/${type}/${txn}`, {
          token: bob.access_token,
          body: { messages: { [laptop.user_id]: { '*': content } } },
        });
        t.equal(r.statusCode, 200);
      }
      // Named devices are filtered the same way as '*'.
      await s.request('PUT', `${V3}/sendToDevice/m.room.encrypted/t3`, {
        token: bob.access_token,
        body: { messages: { [laptop.user_id]: { [phone.device_id]: encrypted } } },
      });
      const all = ['m.room.encrypted', 'm.test.plain'];
      t.same(await inbox(s, laptop), all, 'the cross-signed laptop gets both');
      if (policy) {
        t.same(await inbox(s, phone), ['m.test.plain'], 'the unverified phone gets no encrypted message');
        t.same(await inbox(s, tablet), ['m.test.plain'], 'a signature by a replaced key does not count');
        t.equal(s.runtime.services.toDevice.droppedUnverified, 3);
        t.match(
          await s.runtime.services.metrics.registry.metrics(),
          /conclave_to_device_dropped_unverified_total 3/,
          'counted in the metrics',
        );
      } else {
        t.same(await inbox(s, phone), [...all, 'm.room.encrypted'], 'policy off: every device gets all');
        t.same(await inbox(s, tablet), all);
        t.equal(s.runtime.services.toDevice.droppedUnverified, 0);
      }

      // Once the phone is cross-signed with the current key, it gets the next ones.
      await crossSign(s, laptop, second, devices.phone);
      await s.request('PUT', `${V3}/sendToDevice/m.room.encrypted/t4`, {
        token: bob.access_token,
        body: { messages: { [laptop.user_id]: { [phone.device_id]: encrypted } } },
      });
      const phoneNext = await inbox(s, phone);
      t.ok(phoneNext.includes('m.room.encrypted'), 'after cross-signing the phone gets encrypted messages');
    });
  }
}
