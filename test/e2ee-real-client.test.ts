/**
 * End-to-end encryption through Conclave with real implementations: unmodified matrix-js-sdk with
 * its Rust crypto (test/helpers/crypto-client.ts) and matrix-nio (test/nio/nio_client.py), over
 * HTTP on 127.0.0.1.
 *
 * Every subtest runs and a fault fails it; the only skip is matrix-nio's Python being absent
 * outside CI.
 *
 * Nothing is printed of a message body, a key or a token.
 */
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import t, { type Test } from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import {
  type CryptoClient,
  CryptoHarness,
  type DecryptionState,
  MEGOLM,
  sleep,
  startHttpTestServer,
  verifyBySas,
  within,
} from './helpers/crypto-client.ts';
import { type NioLine, nioPython, pythonUnavailable, startNio } from './helpers/nio.ts';
import { columnsHolding } from './helpers/plaintext-scan.ts';
import { PASSWORD } from './helpers/server.ts';

/** Messages each way in the first conversation. */
const EACH_WAY = 20;
const CI = process.env.CI === 'true';

// Real clients, several devices, a key backup upload that the SDK delays by up to 10 s, and a
// Python environment that may have to be made: more than the default time of a test file.
t.setTimeout(15 * 60_000);

const V3 = '/_matrix/client/v3';
const summary = (states: Map<string, DecryptionState>) => {
  const counts: Record<string, number> = {};
  for (const s of states.values()) counts[s.state] = (counts[s.state] ?? 0) + 1;
  return Object.entries(counts)
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
};

for (const backend of databaseBackends()) {
  t.test(`end-to-end encryption with real clients through Conclave on ${backend.name}`, async (t) => {
    const { server, baseUrl, logs } = await startHttpTestServer(t, backend);
    // matrix-nio needs Python with venv: outside CI its absence skips that one subtest; under
    // CI it must be there (.ci/run installs it), so its absence fails.
    const nioSkip = CI ? false : ((await pythonUnavailable()) ?? false);

    const harness = new CryptoHarness(t, baseUrl);
    // Every plaintext carries a marker found nowhere else, to look for in the database.
    const marker = `plaintext-${randomBytes(8).toString('hex')}`;
    const plaintexts: string[] = [];
    const text = (what: string) => {
      const body = `${marker} ${what}`;
      plaintexts.push(body);
      return body;
    };

    // alice and bob, each on one device, in an encrypted private room: made by the first subtest
    // that needs them.
    let shared: { alice: CryptoClient; bob: CryptoClient; roomId: string } | undefined;
    let carol: CryptoClient | undefined;
    const setUp = async (t: Test) => {
      if (shared) return shared;
      const alice = await harness.client('alice', await harness.register('alice'));
      const bob = await harness.client('bob', await harness.register('bob'));
      await Promise.all([alice.start(), bob.start()]);
      t.ok(
        (await within(15_000, () => alice.keysUploaded(harness) && bob.keysUploaded(harness))) !== undefined,
        'both devices publish their keys (POST /keys/upload answered 200)',
      );
      const roomId = await alice.createEncryptedRoom({ name: 'Secret lab', invite: [bob.userId] });
      t.ok((await bob.waitForMembership(roomId, 'invite')) !== undefined, 'bob is invited');
      await bob.client.joinRoom(roomId);
      t.ok((await alice.waitForMember(roomId, bob.userId, 'join')) !== undefined, 'alice sees bob join');
      t.ok((await bob.waitForMembership(roomId, 'join')) !== undefined, "bob's sync shows him joined");
      t.ok(
        (await alice.waitForEncryptedRoom(roomId)) !== undefined &&
          (await bob.waitForEncryptedRoom(roomId)) !== undefined,
        'both crypto layers know the room is encrypted',
      );
      shared = { alice, bob, roomId };
      return shared;
    };

    /** Asserts that `client` decrypted each of `messages` to its body. */
    const assertDecrypted = async (
      t: Test,
      client: CryptoClient,
      roomId: string,
      messages: { id: string; body: string }[],
      what: string,
      ms = 15_000,
    ) => {
      const states = await client.waitForDecrypted(
        roomId,
        messages.map((m) => m.id),
        ms,
      );
      const wrong = messages.filter((m) => {
        const s = states.get(m.id);
        return s?.state !== 'decrypted' || s.type !== 'm.room.message' || s.body !== m.body;
      });
      t.equal(wrong.length, 0, `${client.who} decrypts ${what} (${summary(states)})`);
    };

    t.test(`alice and bob exchange ${EACH_WAY} encrypted messages each way`, async (t) => {
      const { alice, bob, roomId } = await setUp(t);
      // A conversation: each answers once the other's message has arrived and decrypted.
      const sent: { id: string; body: string; from: CryptoClient }[] = [];
      for (let i = 0; i < 2 * EACH_WAY; i++) {
        const from = i % 2 === 0 ? alice : bob;
        const previous = sent.at(-1);
        if (previous) {
          const state = (await from.waitForDecrypted(roomId, [previous.id], 10_000)).get(previous.id);
          if (state?.state !== 'decrypted') {
            t.fail(`${from.who} did not decrypt message ${i - 1} within 10 s (${state?.state})`);
            break;
          }
        }
        const body = text(`message ${i} from ${from.who}`);
        sent.push({ id: await from.send(roomId, body), body, from });
      }
      t.equal(sent.length, 2 * EACH_WAY, `${sent.length} messages sent`);
      await assertDecrypted(t, alice, roomId, sent, `all ${sent.length} messages (bob's and her own)`);
      await assertDecrypted(t, bob, roomId, sent, `all ${sent.length} messages (alice's and his own)`);

      // What the server holds is ciphertext.
      const wire = [];
      for (const m of sent) wire.push(await alice.serverEvent(roomId, m.id));
      t.ok(
        wire.every((e) => e.type === 'm.room.encrypted'),
        'the server serves every message as m.room.encrypted',
      );
      t.ok(
        wire.every(
          (e) =>
            e.content?.algorithm === MEGOLM &&
            typeof e.content.ciphertext === 'string' &&
            typeof e.content.session_id === 'string' &&
            e.content.body === undefined,
        ),
        'Megolm ciphertext, with a session ID and no body',
      );
      const sessions = new Set(wire.map((e) => e.content?.session_id));
      t.comment(`${sessions.size} Megolm sessions for ${sent.length} messages (one per sender expected)`);
    });

    t.test('carol, invited later, decrypts what is sent after she joins', async (t) => {
      const { alice, bob, roomId } = await setUp(t);
      carol = await harness.client('carol', await harness.register('carol'));
      await carol.start();
      const c = carol;
      t.ok(
        (await within(15_000, () => c.keysUploaded(harness))) !== undefined,
        "carol's device publishes keys",
      );
      await alice.client.invite(roomId, c.userId);
      t.ok((await c.waitForMembership(roomId, 'invite')) !== undefined, 'carol is invited');
      await c.client.joinRoom(roomId);
      t.ok((await alice.waitForMember(roomId, c.userId, 'join')) !== undefined, 'alice sees carol join');
      t.ok((await bob.waitForMember(roomId, c.userId, 'join')) !== undefined, 'bob sees carol join');
      t.ok(
        (await c.waitForEncryptedRoom(roomId)) !== undefined,
        "carol's crypto knows the room is encrypted",
      );

      const sent: { id: string; body: string }[] = [];
      for (let i = 0; i < 6; i++) {
        const from = i % 2 === 0 ? alice : bob;
        const body = text(`after carol joined ${i} from ${from.who}`);
        sent.push({ id: await from.send(roomId, body), body });
      }
      await assertDecrypted(t, c, roomId, sent, 'every message sent after her join');
      await assertDecrypted(t, alice, roomId, sent, 'them too');
      await assertDecrypted(t, bob, roomId, sent, 'them too');
    });

    t.test('after bob is kicked, a new Megolm session whose key bob never gets', async (t) => {
      const { alice, bob, roomId } = await setUp(t);
      const beforeBody = text('the last one bob may read');
      const before = await alice.send(roomId, beforeBody);
      await assertDecrypted(
        t,
        bob,
        roomId,
        [{ id: before, body: beforeBody }],
        "alice's message before the kick",
      );
      const sessionBefore = await alice.sessionIdOf(roomId, before);
      t.ok(sessionBefore, 'its session ID is in its content');
      t.ok(
        bob.roomKeys.some((k) => k.sessionId === sessionBefore && k.encrypted),
        "bob's device got that session's key by Olm-encrypted to-device message",
      );

      await alice.client.kick(roomId, bob.userId, 'end of the project');
      t.ok((await alice.waitForMember(roomId, bob.userId, 'leave')) !== undefined, 'alice sees bob kicked');
      t.ok((await bob.waitForMembership(roomId, 'leave')) !== undefined, "bob's client sees he was kicked");

      const afterBody = text('not for bob');
      const after = await alice.send(roomId, afterBody);
      const sessionAfter = await alice.sessionIdOf(roomId, after);
      t.ok(sessionAfter, 'the next message has a session ID');
      t.not(sessionAfter, sessionBefore, "alice's next message uses a new Megolm session");
      if (carol) {
        const c = carol;
        await assertDecrypted(t, c, roomId, [{ id: after, body: afterBody }], 'it (she is still a member)');
        t.ok(
          c.roomKeys.some((k) => k.sessionId === sessionAfter),
          'carol got the new session key by to-device message',
        );
      }

      await sleep(2000); // time for a stray key or event to reach bob, if one were coming
      t.notOk(
        bob.roomKeys.some((k) => k.sessionId === sessionAfter),
        "bob's device received no key for the new session",
      );
      t.equal(bob.decryption(roomId, after).state, 'absent', 'the event never reached bob');
      const raw = (await alice.client.fetchRoomEvent(roomId, after)) as Record<string, unknown>;
      const attempt = await bob.tryDecrypt({ ...raw, room_id: roomId });
      t.equal(attempt.state, 'failed', "given the ciphertext, bob's device cannot decrypt it");
    });

    t.test('cross-signing, then interactive emoji verification between alice and bob', async (t) => {
      const { alice, bob } = await setUp(t);
      // bob was kicked from the shared room above. Users who share no room are not told of
      // each other's key changes (device_lists), so they meet in a new room first.
      const meeting = await alice.createEncryptedRoom({ name: 'Verification', invite: [bob.userId] });
      await bob.waitForMembership(meeting, 'invite');
      await bob.client.joinRoom(meeting);
      t.ok(
        (await alice.waitForMember(meeting, bob.userId, 'join')) !== undefined,
        'alice and bob share a room again',
      );
      await alice.bootstrapCrossSigning();
      await bob.bootstrapCrossSigning();
      t.ok(await alice.crypto.isCrossSigningReady(), "alice's cross-signing is ready");
      t.ok(await bob.crypto.isCrossSigningReady(), "bob's cross-signing is ready");
      const own = await alice.crypto.getDeviceVerificationStatus(alice.userId, alice.deviceId);
      t.ok(own?.signedByOwner, "alice's device is signed by her self-signing key");
      t.ok(own?.crossSigningVerified, 'and so verified by her cross-signing identity');
      t.ok(
        (await within(15_000, () => bob.crypto.userHasCrossSigningKeys(alice.userId, true))) !== undefined,
        "bob learns of alice's cross-signing keys (device_lists in his sync, then /keys/query)",
      );

      t.notOk(
        (await alice.crypto.getDeviceVerificationStatus(bob.userId, bob.deviceId))?.isVerified(),
        "before: alice does not consider bob's device verified",
      );
      const { aEmoji, bEmoji } = await verifyBySas(alice, bob);
      t.equal(aEmoji.length, 7, 'alice is shown seven emoji');
      t.same(bEmoji, aEmoji, 'bob is shown the same seven');
      const sentToDevice = (c: CryptoClient) =>
        harness.exchanges.some(
          (e) =>
            e.who === c.who &&
            e.method === 'PUT' &&
            e.path.startsWith(`${V3}/sendToDevice/m.key.verification.`) &&
            e.status === 200,
        );
      t.ok(sentToDevice(alice) && sentToDevice(bob), 'both sent m.key.verification.* by /sendToDevice');
      t.ok(
        bob.toDeviceTypes.includes('m.key.verification.request') &&
          alice.toDeviceTypes.includes('m.key.verification.ready') &&
          bob.toDeviceTypes.includes('m.key.verification.mac') &&
          alice.toDeviceTypes.includes('m.key.verification.mac'),
        'and received them through to_device in /sync',
      );

      const verified = (a: CryptoClient, b: CryptoClient) => async () =>
        (await a.crypto.getDeviceVerificationStatus(b.userId, b.deviceId))?.isVerified() === true;
      t.ok((await within(15_000, verified(alice, bob))) !== undefined, "alice sees bob's device verified");
      t.ok((await within(15_000, verified(bob, alice))) !== undefined, "bob sees alice's device verified");
      const userVerified = (a: CryptoClient, b: CryptoClient) => async () =>
        (await a.crypto.getUserVerificationStatus(b.userId)).isCrossSigningVerified();
      t.ok(
        (await within(15_000, userVerified(alice, bob))) !== undefined,
        'alice has verified bob (her user-signing key signed his identity)',
      );
      t.ok((await within(15_000, userVerified(bob, alice))) !== undefined, 'and bob alice');
    });

    t.test('key backup: a new device of alice restores her keys with the recovery key', async (t) => {
      const { alice, roomId } = await setUp(t);
      const { recoveryKey, version } = await alice.setupKeyBackup();
      t.ok(version, 'alice creates a key backup, its key in secret storage under a new recovery key');
      t.ok(await alice.crypto.isSecretStorageReady(), 'secret storage is ready');

      // A fresh session, so that only the backup can give the new device its key.
      await alice.crypto.forceDiscardSession(roomId);
      const sent: { id: string; body: string }[] = [];
      for (let i = 0; i < 5; i++) {
        const body = text(`backed up ${i}`);
        sent.push({ id: await alice.send(roomId, body), body });
      }
      const first = sent[0];
      if (!first) throw new Error('nothing sent');
      const sessionId = await alice.sessionIdOf(roomId, first.id);
      if (!sessionId) throw new Error('no session ID');
      t.ok(
        (await alice.waitForBackup(version, roomId, [sessionId])) !== undefined,
        "the SDK uploads the messages' session key to the backup (PUT /room_keys/keys)",
      );

      const alice2 = await harness.client('alice2', await harness.login(alice.userId), { recoveryKey });
      t.not(alice2.deviceId, alice.deviceId, 'alice logs in on a new device');
      await alice2.start();
      const before = await alice2.waitForDecrypted(
        roomId,
        sent.map((m) => m.id),
        3000,
      );
      t.ok(
        [...before.values()].every((s) => s.state !== 'decrypted'),
        `before restoring, it cannot decrypt them (${summary(before)})`,
      );
      const result = await alice2.restoreKeyBackup();
      t.ok(result.imported >= 1, `it restores keys from the backup (${result.imported} of ${result.total})`);
      await assertDecrypted(t, alice2, roomId, sent, 'the messages sent before it existed');
    });

    // matrix-nio ignores a whole /sync response whose next_batch equals the one before
    // (nio/client/base_client.py, _handle_sync): a response that carries only to-device messages
    // or device-list changes must still carry a new token, or nio never sees the room key.
    t.test('matrix-nio and matrix-js-sdk decrypt each other', { skip: nioSkip }, async (t) => {
      const { alice } = await setUp(t);
      const { python, installMs } = await nioPython();
      t.comment(
        installMs > 0
          ? `made the matrix-nio environment in ${Math.round(installMs / 1000)} s`
          : 'matrix-nio environment already made',
      );
      const daveId = await harness.registerOnly('dave');
      const roomId = await alice.createEncryptedRoom({ name: 'With nio', invite: [daveId] });
      const fromNio = text('from matrix-nio');
      const nio = startNio({
        python,
        homeserver: baseUrl,
        userId: daveId,
        password: PASSWORD,
        roomId,
        send: fromNio,
        expect: 1,
        timeoutSeconds: 120,
      });
      t.teardown(() => nio.kill());
      const saw = (event: string) => nio.lines.some((l) => l.event === event);
      const ready = await within(90_000, () => saw('ready') || saw('error') || saw('timeout'));
      t.ok(ready !== undefined && saw('ready'), 'nio logs in, publishes keys and joins the room');
      t.ok((await alice.waitForMember(roomId, daveId, 'join')) !== undefined, 'alice sees dave (nio) join');
      // alice's crypto finds nio's device through device tracking (no forced refresh).
      t.ok(
        (await within(20_000, async () => {
          const devices = await alice.crypto.getUserDeviceInfo([daveId]);
          return (devices.get(daveId)?.size ?? 0) > 0;
        })) !== undefined,
        "alice's crypto knows nio's device",
      );
      const fromJs = text('from matrix-js-sdk');
      const jsId = await alice.send(roomId, fromJs);

      const { code, stderrTail } = await nio.exited;
      const outcome = nio.lines.filter((l) => ['done', 'timeout', 'error'].includes(l.event));
      t.equal(code, 0, `nio finishes (${outcome.map((l) => l.event).join(', ') || 'no outcome'})`);
      const errors = nio.lines.filter((l) => l.event === 'error').map((l) => String(l.what));
      if (code !== 0) t.comment(`nio: ${errors.join('; ')}\n${stderrTail.slice(-1500)}`);
      const got = nio.lines.filter((l): l is NioLine & { body: unknown } => l.event === 'message');
      t.ok(
        got.some((l) => l.event_id === jsId && l.sender === alice.userId && l.body === fromJs),
        "nio decrypts alice's message",
      );
      const sentLine = nio.lines.find((l) => l.event === 'sent');
      const nioId = typeof sentLine?.event_id === 'string' ? sentLine.event_id : undefined;
      t.ok(nioId, 'nio sends its message');
      if (nioId) await assertDecrypted(t, alice, roomId, [{ id: nioId, body: fromNio }], "nio's message");
    });

    t.test('the server logs hold none of the plaintexts, nor an access token', async (t) => {
      t.ok(logs.length > 100, `${logs.length} log lines written (every level, trace and up)`);
      t.same(
        logs.filter((l) => l.includes(marker)),
        [],
        'no log line holds a message body',
      );
      const tokens = harness.accessTokens();
      t.ok(tokens.length >= 2, `${tokens.length} access tokens in use`);
      t.same(
        logs.filter((l) => tokens.some((tok) => l.includes(tok))),
        [],
        'no log line holds an access token',
      );
    });

    t.test('the database holds none of the plaintexts', async (t) => {
      t.ok(plaintexts.length >= 2 * EACH_WAY, `${plaintexts.length} messages were sent`);
      const db = server.runtime.services.db;
      const encrypted = await sql<{ n: number }>`
        select count(*)::int as n from events where type = 'm.room.encrypted'`.execute(db);
      t.ok(
        (encrypted.rows[0]?.n ?? 0) >= plaintexts.length,
        `the events table holds them as m.room.encrypted (${encrypted.rows[0]?.n})`,
      );
      const inEvents = await sql<{ n: number }>`
        select count(*)::int as n from events where json::text like ${`%${marker}%`}`.execute(db);
      t.equal(inEvents.rows[0]?.n, 0, "no event's json holds a plaintext");

      // Every column of every table that can hold text, JSON or bytes.
      const { searched, found } = await columnsHolding(db, marker);
      t.ok(searched > 10, `${searched} text, JSON and byte columns searched`);
      t.same(found, [], 'no column anywhere holds a plaintext');
    });

    t.test('the server answered what the clients asked', async (t) => {
      const tolerated = (e: { method: string; path: string; status: number; errcode?: string }) =>
        e.method === 'GET' &&
        e.path === '/_matrix/client/unstable/org.matrix.msc4143/rtc/transports' &&
        e.status === 404;
      const failures = harness.failures;
      for (const f of failures) {
        t.comment(`${f.who} ${f.method} ${f.path} -> ${f.status} ${f.errcode ?? ''}`);
      }
      for (const { line } of harness.sdkLog.filter((l) => l.level === 'error')) t.comment(line);
      t.same(
        failures.filter((f) => f.status >= 500).map((f) => `${f.method} ${f.path} ${f.status}`),
        [],
        'no server error',
      );
      t.same(
        failures
          .filter((f) => f.errcode === 'M_UNRECOGNIZED' && !tolerated(f))
          .map((f) => `${f.method} ${f.path} ${f.status}`),
        [],
        'no request to an endpoint Conclave does not serve',
      );
    });
  });
}
