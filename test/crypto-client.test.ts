/**
 * The end-to-end encryption test client works in Node 20 against Conclave: matrix-js-sdk's Rust
 * crypto (wasm) initialises with an in-memory store, the client syncs, and the SDK sends its
 * device and one-time keys to POST /keys/upload, signed as the spec says. Whether the server
 * serves that endpoint yet does not matter here (test/e2ee-real-client.test.ts needs it): the
 * answer must be a success or Conclave's 404 M_UNRECOGNIZED for an endpoint it lacks.
 */
import t from 'tap';
import { decodeBase64 } from '../src/protocol/base64.ts';
import { verifyJsonSignature } from '../src/protocol/signing.ts';
import { databaseBackends } from './helpers/backends.ts';
import { CryptoHarness, MEGOLM, startHttpTestServer, within } from './helpers/crypto-client.ts';

interface UploadBody {
  device_keys?: {
    user_id?: string;
    device_id?: string;
    algorithms?: string[];
    keys?: Record<string, string>;
    signatures?: Record<string, Record<string, string>>;
  };
  one_time_keys?: Record<string, { key?: string; signatures?: unknown }>;
  fallback_keys?: Record<string, { key?: string; fallback?: boolean; signatures?: unknown }>;
}

// The harness does not depend on the database: PGlite alone is enough.
const [backend] = databaseBackends();
if (!backend) throw new Error('no database backend');

t.test('matrix-js-sdk with Rust crypto runs in Node against Conclave', async (t) => {
  const { baseUrl } = await startHttpTestServer(t, backend);
  const harness = new CryptoHarness(t, baseUrl, { keepRequestBodies: /\/keys\/upload$/ });
  const login = await harness.register('alice');

  const started = performance.now();
  const alice = await harness.client('alice', login);
  t.pass(`initRustCrypto({ useIndexedDB: false }) succeeds (${Math.round(performance.now() - started)} ms)`);
  t.match(alice.crypto.getVersion(), /Rust SDK/, 'the crypto backend is the Rust SDK');
  const own = await alice.crypto.getOwnDeviceKeys();
  t.equal(decodeBase64(own.ed25519).length, 32, 'the device has an ed25519 key');
  t.equal(decodeBase64(own.curve25519).length, 32, 'and a curve25519 key');

  await alice.start();
  t.pass('the client with crypto finishes its first sync');

  const uploadSeen = await within(15_000, () =>
    harness.exchanges.some((e) => e.method === 'POST' && e.path === '/_matrix/client/v3/keys/upload'),
  );
  t.ok(uploadSeen !== undefined, 'after the first sync the SDK sends POST /keys/upload');
  const upload = harness.exchanges.find(
    (e) => e.method === 'POST' && e.path === '/_matrix/client/v3/keys/upload',
  );
  if (!upload?.requestBody) throw new Error('no key upload request reached the server');

  if (upload.status === 404) {
    t.equal(upload.errcode, 'M_UNRECOGNIZED', 'the server answers 404 M_UNRECOGNIZED: not served yet');
  } else {
    t.equal(upload.status, 200, 'the server accepts the keys');
  }

  // The request is what a real device sends: its identity keys, signed with its ed25519 key, and
  // signed one-time keys (none of them printed).
  const body = JSON.parse(upload.requestBody) as UploadBody;
  const deviceKeys = body.device_keys;
  if (!deviceKeys) throw new Error('the first key upload has no device_keys');
  t.equal(deviceKeys.user_id, alice.userId, 'device_keys.user_id');
  t.equal(deviceKeys.device_id, alice.deviceId, 'device_keys.device_id');
  t.ok(deviceKeys.algorithms?.includes(MEGOLM), 'Megolm among the algorithms');
  t.ok(deviceKeys.algorithms?.includes('m.olm.v1.curve25519-aes-sha2'), 'and Olm');
  t.equal(deviceKeys.keys?.[`ed25519:${alice.deviceId}`], own.ed25519, 'the ed25519 key of the device');
  t.equal(deviceKeys.keys?.[`curve25519:${alice.deviceId}`], own.curve25519, 'its curve25519 key');
  const signingKey = decodeBase64(own.ed25519);
  t.ok(
    verifyJsonSignature(deviceKeys, alice.userId, `ed25519:${alice.deviceId}`, signingKey),
    'device_keys carry a valid self-signature',
  );
  const otks = Object.entries(body.one_time_keys ?? {});
  t.ok(otks.length > 0, `one-time keys are uploaded (${otks.length})`);
  t.ok(
    otks.every(([id]) => id.startsWith('signed_curve25519:')),
    'all of them signed_curve25519',
  );
  t.ok(
    otks.every(([, key]) => verifyJsonSignature(key, alice.userId, `ed25519:${alice.deviceId}`, signingKey)),
    'each validly signed by the device',
  );
  const fallback = Object.entries(body.fallback_keys ?? {});
  t.ok(
    fallback.every(([id, key]) => id.startsWith('signed_curve25519:') && key.fallback === true),
    `fallback keys, if any (${fallback.length}), are marked as such`,
  );

  // The client keeps syncing whatever the answer was.
  const syncsBefore = harness.exchanges.filter((e) => e.who === 'alice' && e.path.endsWith('/sync')).length;
  const roomId = await alice.createEncryptedRoom({ name: 'Harness check' });
  t.ok((await alice.waitForMembership(roomId, 'join')) !== undefined, 'the client sees a room it creates');
  t.ok(
    (await alice.waitForEncryptedRoom(roomId)) !== undefined,
    'and its crypto layer knows the room is encrypted (m.room.encryption)',
  );
  t.ok(
    harness.exchanges.filter((e) => e.who === 'alice' && e.path.endsWith('/sync')).length > syncsBefore,
    'sync went on',
  );
  for (const f of harness.failures)
    t.comment(`${f.who} ${f.method} ${f.path} -> ${f.status} ${f.errcode ?? ''}`);
});
