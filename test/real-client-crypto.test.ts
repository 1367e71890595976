/**
 * matrix-js-sdk with its Rust crypto stack against Conclave's key endpoints over HTTP on
 * 127.0.0.1: both devices publish their keys as the SDK builds them, alice bootstraps
 * cross-signing (the first upload and a reset, each through UIA), bob downloads her keys and
 * finds her device signed by her, and bob's encrypted message makes his SDK claim alice's
 * one-time key and send her the room key as a to-device message, with which hers decrypts it.
 */
import './helpers/sdk-node.ts';
import type { AddressInfo } from 'node:net';
import { ClientEvent, createClient, type MatrixClient, Preset, SyncState } from 'matrix-js-sdk';
import { type Logger, logger as sdkGlobalLogger } from 'matrix-js-sdk/lib/logger.js';
import t from 'tap';
import { currentPosition } from '../src/streams/positions.ts';
import { databaseBackends } from './helpers/backends.ts';
import { PASSWORD, startTestServer } from './helpers/server.ts';

const verbose = process.env.REAL_CLIENT_VERBOSE === '1';
(sdkGlobalLogger as unknown as { setLevel(level: string): void }).setLevel(verbose ? 'debug' : 'silent');

/** The SDK's own log (it reports, say, that key backup is not served): printed only when verbose. */
const sdkLogger = (): Logger => {
  const log = (...msg: unknown[]) => {
    if (verbose) console.error(...msg);
  };
  return { trace: log, debug: log, info: log, warn: log, error: log, getChild: () => sdkLogger() };
};

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
async function eventually<T>(ms: number, check: () => Promise<T | undefined>): Promise<T | undefined> {
  const started = Date.now();
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() - started > ms) return undefined;
    await sleep(50);
  }
}

for (const backend of databaseBackends()) {
  t.test(`matrix-js-sdk Rust crypto against the key endpoints on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    await s.app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = s.app.server.address() as AddressInfo;
    const baseUrl = `http://127.0.0.1:${port}`;
    const db = s.runtime.database.db;
    const { keys, toDevice } = s.runtime.services;

    const failures: string[] = [];
    const clients: MatrixClient[] = [];
    t.teardown(() => {
      for (const c of clients) {
        c.stopClient();
        c.removeAllListeners();
      }
    });
    const client = async (localpart: string, deviceId: string) => {
      const login = await s.register(localpart, { deviceId });
      const c = createClient({
        baseUrl,
        userId: login.user_id,
        accessToken: login.access_token,
        deviceId: login.device_id,
        logger: sdkLogger(),
        fetchFn: async (input, init) => {
          const res = await fetch(input, init);
          const url = new URL(
            typeof input === 'string' ? input : input instanceof URL ? input.href : input.url,
          );
          if (!res.ok && url.pathname.includes('/keys/')) {
            failures.push(`${localpart} ${init?.method ?? 'GET'} ${url.pathname} ${res.status}`);
          }
          return res;
        },
      });
      clients.push(c);
      await c.initRustCrypto({ useIndexedDB: false });
      const prepared = new Promise<void>((resolve) => {
        const onSync = (state: SyncState) => {
          if (state === SyncState.Prepared) {
            c.off(ClientEvent.Sync, onSync);
            resolve();
          }
        };
        c.on(ClientEvent.Sync, onSync);
      });
      await c.startClient({ initialSyncLimit: 10, pollTimeout: 2000 });
      await prepared;
      return { c, login };
    };

    const alice = await client('alice', 'ALICEDEVICE');
    const bob = await client('bob', 'BOBDEVICE');

    const published = await eventually(10_000, async () => {
      const both = await db.selectFrom('e2e_device_keys').select('user_id').execute();
      return both.length === 2 ? true : undefined;
    });
    t.ok(published, "both SDKs' device keys pass every check and are stored");
    const counts = await eventually(10_000, async () => {
      const n = (await keys.oneTimeKeyCounts(alice.login.user_id, 'ALICEDEVICE')).signed_curve25519 ?? 0;
      return n > 0 ? n : undefined;
    });
    t.ok(counts, `alice's SDK uploaded signed one-time keys (${counts})`);

    // Cross-signing: every upload that changes keys needs UIA; the SDK's auth callback answers the 401.
    const uiaRounds: string[] = [];
    const authCallback = async (makeRequest: (auth: Record<string, unknown> | null) => Promise<unknown>) => {
      try {
        await makeRequest(null);
        uiaRounds.push('none');
      } catch (err) {
        const session = (err as { data?: { session?: string } }).data?.session;
        uiaRounds.push('password');
        await makeRequest({
          type: 'm.login.password',
          identifier: { type: 'm.id.user', user: 'alice' },
          password: PASSWORD,
          session,
        });
      }
    };
    const aliceCrypto = alice.c.getCrypto()!;
    await aliceCrypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: authCallback });
    t.same(uiaRounds, ['password'], 'the first upload goes through UIA (answered with the password)');
    t.ok(await aliceCrypto.isCrossSigningReady(), "alice's cross-signing is ready");
    const signed = await eventually(10_000, async () => {
      const rows = await db.selectFrom('e2e_cross_signing_signatures').selectAll().execute();
      return rows.some((r) => r.target_key_id === 'ALICEDEVICE') ? true : undefined;
    });
    t.ok(signed, "the SDK's signature of alice's device by her self-signing key is accepted");

    // bob downloads alice's keys (not yet tracking her, his SDK asks /keys/query directly).
    const bobCrypto = bob.c.getCrypto()!;
    const devices = await bobCrypto.getUserDeviceInfo([alice.login.user_id], true);
    t.ok(devices.get(alice.login.user_id)?.has('ALICEDEVICE'), "bob's SDK accepts alice's device keys");

    // A reset replaces the keys: now the SDK's callback is asked and answers with the password.
    await aliceCrypto.bootstrapCrossSigning({
      setupNewCrossSigning: true,
      authUploadDeviceSigningKeys: authCallback,
    });
    t.same(uiaRounds, ['password', 'password'], 'replacing the keys goes through UIA');

    // bob sends an encrypted message to a room with alice: his SDK claims one of alice's one-time
    // keys and sends her the room key as a to-device message.
    const before = await currentPosition(db);
    const room = await bob.c.createRoom({
      preset: Preset.PrivateChat,
      invite: [alice.login.user_id],
      initial_state: [
        { type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } },
      ],
    });
    await alice.c.joinRoom(room.room_id);
    await eventually(10_000, async () =>
      bob.c.getRoom(room.room_id)?.getMember(alice.login.user_id)?.membership === 'join' ? true : undefined,
    );
    await bob.c.sendTextMessage(room.room_id, 'encrypted hello');
    // The room key travels as an encrypted to-device message, which alice's sync delivers (and
    // then acknowledges, so it is deleted); her SDK then decrypts the message.
    const decrypted = await eventually(10_000, async () =>
      alice.c
        .getRoom(room.room_id)
        ?.getLiveTimeline()
        .getEvents()
        .some((e) => e.getType() === 'm.room.message' && e.getContent().body === 'encrypted hello')
        ? true
        : undefined,
    );
    t.ok(decrypted, "alice's SDK got the room key through a to-device message and decrypts bob's message");
    // Her next sync carries a since token past the delivery: the message is then deleted.
    const gone = await eventually(10_000, async () => {
      const waiting = await toDevice.messagesFor(
        alice.login.user_id,
        'ALICEDEVICE',
        before,
        await currentPosition(db),
      );
      return waiting.some((m) => m.sender === bob.login.user_id) ? undefined : true;
    });
    t.ok(gone, 'and, acknowledged by her next sync, the to-device message is gone from the server');
    const event = await db
      .selectFrom('events')
      .select('type')
      .where('room_id', '=', room.room_id)
      .where('sender', '=', bob.login.user_id)
      .where('type', '=', 'm.room.encrypted')
      .execute();
    t.equal(event.length, 1, 'and the message went out encrypted');

    // Now bob's SDK tracks alice: it checked her keys, and finds her device signed by her (new) keys.
    const status = await bobCrypto.getDeviceVerificationStatus(alice.login.user_id, 'ALICEDEVICE');
    t.ok(status?.signedByOwner, "bob's SDK finds alice's device cross-signed by her");
    const identity = await bobCrypto.getUserVerificationStatus(alice.login.user_id);
    t.ok(identity.known, "and knows alice's cross-signing identity");
    t.same(
      failures.filter((f) => f !== 'alice POST /_matrix/client/v3/keys/device_signing/upload 401'),
      [],
      'no key request of either SDK was refused (but for the UIA challenge of the reset)',
    );
  });
}
