import t from 'tap';
import { currentPosition } from '../src/streams/positions.ts';
import { databaseBackends } from './helpers/backends.ts';
import {
  crossSigning,
  crossSigningKey,
  ed25519Pair,
  type Json,
  oneTimeKeys,
  sign,
  testDevice,
} from './helpers/e2ee.ts';
import { type Login, PASSWORD, SERVER_NAME, startTestServer } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;

for (const backend of databaseBackends()) {
  t.test(`e2ee keys on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const { keys, notifier } = s.runtime.services;
    const db = s.runtime.database.db;
    const alice = await s.register('alice', { deviceId: 'ALICEPHONE' });
    const bob = await s.register('bob', { deviceId: 'BOBLAPTOP' });
    const mallory = await s.register('mallory', { deviceId: 'MALLORYDEV' });
    const aliceDevice = testDevice(alice);
    const bobDevice = testDevice(bob);
    const malloryDevice = testDevice(mallory);

    const post = (who: Login, path: string, body: unknown) =>
      s.request('POST', `${V3}${path}`, { token: who.access_token, body });
    const upload = (who: Login, body: unknown) => post(who, '/keys/upload', body);
    const query = (who: Login, users: Record<string, string[]>) =>
      post(who, '/keys/query', { device_keys: users });
    const token = async () => `s${await currentPosition(db)}_0`;
    const position = () => currentPosition(db);

    // alice and bob share a room; mallory shares none with them.
    const room = await post(alice, '/createRoom', { preset: 'private_chat', invite: [bob.user_id] });
    const roomId: string = room.json().room_id;
    await post(bob, `/rooms/${enc(roomId)}/join`, {});

    t.test('POST /keys/upload publishes device keys, one-time and fallback keys', async (t) => {
      const before = await position();
      const res = await upload(alice, {
        device_keys: aliceDevice.deviceKeys,
        one_time_keys: oneTimeKeys(aliceDevice, ['AAAAAQ', 'AAAAAg', 'AAAAAw']),
        fallback_keys: oneTimeKeys(aliceDevice, ['FFFFAQ'], true),
      });
      t.equal(res.statusCode, 200, res.body);
      t.same(res.json(), { one_time_key_counts: { signed_curve25519: 3 } });
      t.same(await keys.oneTimeKeyCounts(alice.user_id, alice.device_id), { signed_curve25519: 3 });
      t.same(await keys.unusedFallbackKeyTypes(alice.user_id, alice.device_id), ['signed_curve25519']);
      t.same(await keys.oneTimeKeyCounts(bob.user_id, bob.device_id), { signed_curve25519: 0 });
      t.same(await keys.unusedFallbackKeyTypes(bob.user_id, bob.device_id), []);
      const changes = await keys.deviceListChanges(bob.user_id, before, await position());
      t.same(changes, { changed: [alice.user_id], left: [] }, 'bob, sharing a room, sees the change');
      const own = await keys.deviceListChanges(alice.user_id, before, await position());
      t.same(own.changed, [alice.user_id], 'alice sees her own change');
      const outsider = await keys.deviceListChanges(mallory.user_id, before, await position());
      t.same(outsider, { changed: [], left: [] }, 'mallory shares no room: nothing');

      const again = await upload(alice, { device_keys: aliceDevice.deviceKeys });
      t.equal(again.statusCode, 200, 'the identical keys again are fine');
      const bobAndMallory = await Promise.all(
        [bob, mallory].map((w) =>
          upload(w, {
            device_keys: (w === bob ? bobDevice : malloryDevice).deviceKeys,
            one_time_keys: oneTimeKeys(w === bob ? bobDevice : malloryDevice, ['B1']),
          }),
        ),
      );
      for (const r of bobAndMallory) t.equal(r.statusCode, 200, r.body);
    });

    t.test('re-uploading identical keys records no change', async (t) => {
      const before = await position();
      t.equal((await upload(alice, { device_keys: aliceDevice.deviceKeys })).statusCode, 200);
      t.equal(await position(), before, 'no stream position taken');
    });

    t.test('POST /keys/upload refuses keys that are not the device own, or not signed by it', async (t) => {
      const refuse = async (what: string, body: unknown, status: number, errcode: string, who = alice) => {
        const res = await upload(who, body);
        t.equal(res.statusCode, status, `${what}: ${status}`);
        t.equal(res.json().errcode, errcode, `${what}: ${errcode}`);
      };
      // mallory's keys, signed by mallory, uploaded as alice's device or naming alice.
      await refuse('another user ID', { device_keys: malloryDevice.deviceKeys }, 403, 'M_FORBIDDEN');
      const otherDevice = testDevice({ user_id: alice.user_id, device_id: 'OTHERDEV' });
      await refuse('another device ID', { device_keys: otherDevice.deviceKeys }, 403, 'M_FORBIDDEN');
      const impostor = testDevice({ user_id: alice.user_id, device_id: alice.device_id });
      await refuse(
        'new identity keys for a published device',
        { device_keys: impostor.deviceKeys },
        403,
        'M_FORBIDDEN',
      );
      await refuse(
        "keys naming bob's device, uploaded by bob's own signature but alice's token",
        { device_keys: bobDevice.deviceKeys },
        403,
        'M_FORBIDDEN',
      );
      const unsignedKeys = { ...aliceDevice.deviceKeys, signatures: {} };
      await refuse('unsigned device keys', { device_keys: unsignedKeys }, 400, 'M_INVALID_SIGNATURE');
      const tampered = { ...aliceDevice.deviceKeys, algorithms: ['m.megolm.v1.aes-sha2'] };
      await refuse(
        'device keys changed after signing',
        { device_keys: tampered },
        400,
        'M_INVALID_SIGNATURE',
      );
      const signedByOther = sign(
        { ...aliceDevice.deviceKeys, signatures: {} },
        alice.user_id,
        `ed25519:${alice.device_id}`,
        ed25519Pair().seed,
      );
      await refuse('signed by another key', { device_keys: signedByOther }, 400, 'M_INVALID_SIGNATURE');
      const noEd = {
        ...aliceDevice.deviceKeys,
        keys: { [`curve25519:${alice.device_id}`]: aliceDevice.curve25519 },
      };
      await refuse('no ed25519 key', { device_keys: noEd }, 400, 'M_INVALID_PARAM');
      const badName = {
        ...aliceDevice.deviceKeys,
        keys: { ...aliceDevice.deviceKeys.keys, 'curve25519:OTHER': aliceDevice.curve25519 },
      };
      await refuse('a key named for another device', { device_keys: badName }, 400, 'M_INVALID_PARAM');

      const forged = oneTimeKeys(malloryDevice, ['FORGED']);
      await refuse(
        'a one-time key signed by another device',
        { one_time_keys: forged },
        400,
        'M_INVALID_SIGNATURE',
      );
      const unsignedOtk = { 'signed_curve25519:NOSIG': { key: aliceDevice.curve25519 } };
      await refuse('an unsigned one-time key', { one_time_keys: unsignedOtk }, 400, 'M_INVALID_SIGNATURE');
      await refuse(
        'a fallback key signed by another device',
        { fallback_keys: oneTimeKeys(malloryDevice, ['FB'], true) },
        400,
        'M_INVALID_SIGNATURE',
      );
      await refuse(
        'a one-time key whose key is not 32 bytes',
        { one_time_keys: { 'signed_curve25519:SHORT': { key: 'abcd', signatures: {} } } },
        400,
        'M_INVALID_PARAM',
      );
      await refuse(
        'a key name without algorithm',
        { one_time_keys: { nocolon: 'x' } },
        400,
        'M_INVALID_PARAM',
      );
      const first = oneTimeKeys(aliceDevice, ['DUP']);
      t.equal((await upload(alice, { one_time_keys: first })).statusCode, 200);
      t.equal((await upload(alice, { one_time_keys: first })).statusCode, 200, 'the same key again is fine');
      await refuse(
        'another key under a used key ID',
        { one_time_keys: oneTimeKeys(aliceDevice, ['DUP']) },
        400,
        'M_INVALID_PARAM',
      );
      await refuse(
        'two fallback keys for one algorithm',
        { fallback_keys: oneTimeKeys(aliceDevice, ['F1', 'F2'], true) },
        400,
        'M_INVALID_PARAM',
      );
      const fresh = await s.register('keyless', { deviceId: 'KEYLESS' });
      await refuse(
        'signed one-time keys before any device keys',
        { one_time_keys: oneTimeKeys(testDevice(fresh), ['X']) },
        400,
        'M_INVALID_PARAM',
        fresh,
      );
      await refuse('device_keys of the wrong type', { device_keys: ['x'] }, 400, 'M_BAD_JSON');
      await refuse(
        'device_keys missing fields',
        { device_keys: { user_id: alice.user_id } },
        400,
        'M_BAD_JSON',
      );
      const none = await s.request('POST', `${V3}/keys/upload`, { body: {} });
      t.equal(none.statusCode, 401);
      t.equal(none.json().errcode, 'M_MISSING_TOKEN');
      t.same(
        await keys.oneTimeKeyCounts(alice.user_id, alice.device_id),
        { signed_curve25519: 4 },
        'nothing refused was stored',
      );
    });

    t.test('POST /keys/query answers device keys with display names', async (t) => {
      await s.request('PUT', `${V3}/devices/${alice.device_id}`, {
        token: alice.access_token,
        body: { display_name: "Alice's phone" },
      });
      const res = await query(bob, { [alice.user_id]: [], [`@nobody:${SERVER_NAME}`]: [] });
      t.equal(res.statusCode, 200);
      const body = res.json();
      const got = body.device_keys[alice.user_id][alice.device_id];
      t.same(got.keys, aliceDevice.deviceKeys.keys);
      t.same(got.signatures, aliceDevice.deviceKeys.signatures);
      t.same(got.unsigned, { device_display_name: "Alice's phone" });
      t.same(body.device_keys[`@nobody:${SERVER_NAME}`], {}, 'an unknown user has no devices');
      t.same(body.failures, {});
      const one = await query(bob, { [alice.user_id]: ['NOSUCHDEVICE'] });
      t.same(one.json().device_keys[alice.user_id], {}, 'only the devices asked for');
      const remote = await query(bob, { '@carol:elsewhere.test': [] });
      t.ok(remote.json().failures['elsewhere.test'], 'a remote server is reported as a failure');
      const bad = await query(bob, { 'not a user': [] });
      t.equal(bad.statusCode, 400);
      t.equal(bad.json().errcode, 'M_INVALID_PARAM');
      const malformed = await post(bob, '/keys/query', { device_keys: { [alice.user_id]: 'ALICEPHONE' } });
      t.equal(malformed.statusCode, 400);
      t.equal(malformed.json().errcode, 'M_BAD_JSON');
    });

    t.test('POST /keys/claim hands out each one-time key once, then the fallback key', async (t) => {
      const claim = (who: Login, wanted: Json) => post(who, '/keys/claim', { one_time_keys: wanted });
      const want = { [alice.user_id]: { [alice.device_id]: 'signed_curve25519' } };
      const seen = new Set<string>();
      for (let i = 0; i < 4; i++) {
        const res = await claim(bob, want);
        t.equal(res.statusCode, 200);
        const got = res.json().one_time_keys[alice.user_id][alice.device_id];
        const [name] = Object.keys(got);
        t.notOk(seen.has(name!), `key ${name} was not handed out before`);
        seen.add(name!);
        t.notOk(got[name!].fallback, 'a one-time key');
      }
      t.same(await keys.oneTimeKeyCounts(alice.user_id, alice.device_id), { signed_curve25519: 0 });
      const fallback = await claim(bob, want);
      const fb = fallback.json().one_time_keys[alice.user_id][alice.device_id];
      t.same(Object.keys(fb), ['signed_curve25519:FFFFAQ'], 'then the fallback key');
      t.equal(fb['signed_curve25519:FFFFAQ'].fallback, true);
      t.same(await keys.unusedFallbackKeyTypes(alice.user_id, alice.device_id), [], 'now marked used');
      const beforeClaim = await position();
      const again = await claim(mallory, want);
      t.equal(await position(), beforeClaim + 1, 'a claim takes a stream position');
      t.same(
        Object.keys(again.json().one_time_keys[alice.user_id][alice.device_id]),
        ['signed_curve25519:FFFFAQ'],
        'a used fallback key is handed out again',
      );
      const unknown = await claim(bob, { [alice.user_id]: { NOSUCHDEVICE: 'signed_curve25519' } });
      t.same(unknown.json(), { one_time_keys: {}, failures: {} }, 'nothing for an unknown device');
      const remote = await claim(bob, { '@carol:elsewhere.test': { DEV: 'signed_curve25519' } });
      t.ok(remote.json().failures['elsewhere.test']);
      const bad = await claim(bob, { 'not a user': { DEV: 'signed_curve25519' } });
      t.equal(bad.statusCode, 400);
      t.equal(bad.json().errcode, 'M_INVALID_PARAM');
      const malformed = await post(bob, '/keys/claim', { one_time_keys: { [alice.user_id]: ['x'] } });
      t.equal(malformed.statusCode, 400);
      t.equal(malformed.json().errcode, 'M_BAD_JSON');

      // A new fallback key is unused again; the same one re-uploaded keeps its used mark.
      await upload(alice, { fallback_keys: oneTimeKeys(aliceDevice, ['FFFFAg'], true) });
      t.same(await keys.unusedFallbackKeyTypes(alice.user_id, alice.device_id), ['signed_curve25519']);
    });

    t.test('concurrent claims never get the same one-time key', async (t) => {
      const ids = Array.from({ length: 20 }, (_, i) => `C${i}`);
      await upload(alice, { one_time_keys: oneTimeKeys(aliceDevice, ids) });
      const want = { one_time_keys: { [alice.user_id]: { [alice.device_id]: 'signed_curve25519' } } };
      const claimers = [bob, mallory];
      const results = await Promise.all(
        Array.from({ length: 30 }, (_, i) => post(claimers[i % 2]!, '/keys/claim', want)),
      );
      const names = results.map((r) => {
        t.equal(r.statusCode, 200);
        return Object.keys(r.json().one_time_keys[alice.user_id][alice.device_id])[0]!;
      });
      const oneTime = names.filter((n) => n !== 'signed_curve25519:FFFFAg');
      t.equal(oneTime.length, 20, 'all 20 one-time keys were handed out');
      t.equal(new Set(oneTime).size, 20, 'each exactly once');
      t.equal(names.length - oneTime.length, 10, 'the rest got the fallback key');
    });

    let aliceCs = crossSigning(alice.user_id);
    const bobCs = crossSigning(bob.user_id);
    const signingUploadRaw = (who: Login, body: unknown) => post(who, '/keys/device_signing/upload', body);
    /** Uploads, answering a UIA challenge with the user's password. */
    const signingUpload = async (who: Login, body: Json) => {
      const first = await signingUploadRaw(who, body);
      if (first.statusCode !== 401 || body.auth !== undefined || !first.json().session) return first;
      return signingUploadRaw(who, {
        ...body,
        auth: {
          type: 'm.login.password',
          session: first.json().session,
          identifier: { type: 'm.id.user', user: who.user_id },
          password: PASSWORD,
        },
      });
    };

    t.test('POST /keys/device_signing/upload: even a first upload needs the password', async (t) => {
      const before = await position();
      const challenge = await signingUploadRaw(alice, aliceCs.body);
      t.equal(challenge.statusCode, 401, 'a first upload is challenged (stricter than the spec)');
      t.same(challenge.json().flows, [{ stages: ['m.login.password'] }]);
      t.same((await query(alice, { [alice.user_id]: [] })).json().master_keys, {}, 'nothing stored yet');
      const res = await signingUpload(alice, aliceCs.body);
      t.equal(res.statusCode, 200, res.body);
      t.equal((await signingUpload(bob, bobCs.body)).statusCode, 200);
      const changes = await keys.deviceListChanges(bob.user_id, before, await position());
      t.same(changes.changed, [alice.user_id, bob.user_id].sort(), 'a device list change for each');
      const again = await signingUploadRaw(alice, aliceCs.body);
      t.equal(again.statusCode, 200, 'the same keys again need no UIA (a retried request)');

      const asAlice = (await query(alice, { [alice.user_id]: [], [bob.user_id]: [] })).json();
      t.same(asAlice.master_keys[alice.user_id], { ...aliceCs.body.master_key, signatures: {} });
      t.same(asAlice.self_signing_keys[alice.user_id], aliceCs.body.self_signing_key);
      t.same(
        asAlice.user_signing_keys[alice.user_id],
        aliceCs.body.user_signing_key,
        'her own user-signing key',
      );
      t.ok(asAlice.master_keys[bob.user_id]);
      t.notOk(asAlice.user_signing_keys[bob.user_id], "never someone else's user-signing key");
      const asMallory = (await query(mallory, { [alice.user_id]: [] })).json();
      t.same(asMallory.user_signing_keys, {});
      t.ok(asMallory.self_signing_keys[alice.user_id]);
    });

    t.test('POST /keys/device_signing/upload: replacing keys needs the password', async (t) => {
      const next = crossSigning(alice.user_id);
      const challenge = await signingUploadRaw(alice, next.body);
      t.equal(challenge.statusCode, 401);
      t.same(challenge.json().flows, [{ stages: ['m.login.password'] }]);
      const session = challenge.json().session;
      const wrong = await signingUploadRaw(alice, {
        ...next.body,
        auth: {
          type: 'm.login.password',
          session,
          identifier: { type: 'm.id.user', user: 'alice' },
          password: 'wrong password',
        },
      });
      t.equal(wrong.statusCode, 401);
      t.equal(wrong.json().errcode, 'M_FORBIDDEN');
      const stillOld = (await query(alice, { [alice.user_id]: [] })).json();
      t.same(stillOld.master_keys[alice.user_id].keys, aliceCs.body.master_key.keys, 'nothing replaced yet');
      const done = await signingUpload(alice, {
        ...next.body,
        auth: {
          type: 'm.login.password',
          session,
          identifier: { type: 'm.id.user', user: 'alice' },
          password: PASSWORD,
        },
      });
      t.equal(done.statusCode, 200, done.body);
      const now = (await query(alice, { [alice.user_id]: [] })).json();
      t.same(now.master_keys[alice.user_id].keys, next.body.master_key.keys);
      aliceCs = next;
    });

    t.test('POST /keys/device_signing/upload refuses keys that do not hold together', async (t) => {
      const refuse = async (what: string, body: Json, status: number, errcode: string, who = mallory) => {
        const res = await signingUpload(who, body);
        t.equal(res.statusCode, status, `${what}: ${status}`);
        t.equal(res.json().errcode, errcode, `${what}: ${errcode}`);
      };
      const cs = crossSigning(mallory.user_id);
      const other = crossSigning(mallory.user_id);
      await refuse(
        'self-signing key without any master key',
        { self_signing_key: cs.body.self_signing_key },
        400,
        'M_MISSING_PARAM',
      );
      await refuse(
        'self-signing key signed by another master key',
        { master_key: cs.body.master_key, self_signing_key: other.body.self_signing_key },
        400,
        'M_INVALID_SIGNATURE',
      );
      await refuse(
        'user-signing key not signed at all',
        {
          master_key: cs.body.master_key,
          user_signing_key: crossSigningKey(mallory.user_id, 'user_signing', ed25519Pair()),
        },
        400,
        'M_INVALID_SIGNATURE',
      );
      await refuse(
        'a master key of another user',
        { master_key: crossSigning(alice.user_id).body.master_key },
        403,
        'M_FORBIDDEN',
      );
      await refuse(
        'a master key with the wrong usage',
        { master_key: { ...cs.body.master_key, usage: ['self_signing'] } },
        400,
        'M_INVALID_PARAM',
      );
      await refuse(
        'a master key with two keys',
        { master_key: { ...cs.body.master_key, keys: { ...cs.body.master_key.keys, 'ed25519:x': 'x' } } },
        400,
        'M_INVALID_PARAM',
      );
      await refuse(
        'a key whose name is not its public key',
        { master_key: { ...cs.body.master_key, keys: { 'ed25519:other': cs.master.publicKey } } },
        400,
        'M_INVALID_PARAM',
      );
      const deviceNamed = await s.register('mallory2', {
        deviceId: cs.master.publicKey.replace(/[+/]/g, 'A'),
      });
      const clash = crossSigning(deviceNamed.user_id);
      const clashing = {
        ...clash.body.master_key,
        keys: { [`ed25519:${deviceNamed.device_id}`]: deviceNamed.device_id },
      };
      const res = await signingUpload(deviceNamed, { master_key: clashing });
      t.equal(res.statusCode, 403, 'a master key whose public key is a device ID');
      t.equal(res.json().errcode, 'M_FORBIDDEN');
      await refuse('the wrong shape', { master_key: { user_id: mallory.user_id } }, 400, 'M_BAD_JSON');
      const q = (await query(mallory, { [mallory.user_id]: [] })).json();
      t.same(q.master_keys, {}, 'nothing refused was stored');
    });

    t.test('POST /keys/signatures/upload', async (t) => {
      const sigUpload = (who: Login, body: unknown) => post(who, '/keys/signatures/upload', body);
      const before = await position();

      // alice's self-signing key signs her device; her device signs her master key.
      const deviceSigned = sign(
        aliceDevice.deviceKeys,
        alice.user_id,
        `ed25519:${aliceCs.selfSigning.publicKey}`,
        aliceCs.selfSigning.seed,
      );
      const masterSigned = sign(
        aliceCs.body.master_key,
        alice.user_id,
        `ed25519:${alice.device_id}`,
        aliceDevice.ed25519.seed,
      );
      const own = await sigUpload(alice, {
        [alice.user_id]: { [alice.device_id]: deviceSigned, [aliceCs.master.publicKey]: masterSigned },
      });
      t.equal(own.statusCode, 200, own.body);
      t.same(own.json(), { failures: {} });

      // alice's user-signing key signs bob's master key: only alice sees that signature.
      const bobMasterSigned = sign(
        bobCs.body.master_key,
        alice.user_id,
        `ed25519:${aliceCs.userSigning.publicKey}`,
        aliceCs.userSigning.seed,
      );
      const other = await sigUpload(alice, { [bob.user_id]: { [bobCs.master.publicKey]: bobMasterSigned } });
      t.same(other.json(), { failures: {} });

      const asBob = (await query(bob, { [alice.user_id]: [], [bob.user_id]: [] })).json();
      t.equal(
        asBob.device_keys[alice.user_id][alice.device_id].signatures[alice.user_id][
          `ed25519:${aliceCs.selfSigning.publicKey}`
        ],
        deviceSigned.signatures[alice.user_id][`ed25519:${aliceCs.selfSigning.publicKey}`],
        "the self-signing signature is merged into alice's device keys",
      );
      t.ok(
        asBob.device_keys[alice.user_id][alice.device_id].signatures[alice.user_id][
          `ed25519:${alice.device_id}`
        ],
        "and the device's own signature is kept",
      );
      t.ok(
        asBob.master_keys[alice.user_id].signatures[alice.user_id][`ed25519:${alice.device_id}`],
        "the device's signature on her master key",
      );
      t.notOk(
        asBob.master_keys[bob.user_id].signatures[alice.user_id],
        "bob does not see alice's signature on his key",
      );
      const asAlice = (await query(alice, { [bob.user_id]: [] })).json();
      t.ok(
        asAlice.master_keys[bob.user_id].signatures[alice.user_id][
          `ed25519:${aliceCs.userSigning.publicKey}`
        ],
        'alice does',
      );

      const aliceView = await keys.deviceListChanges(alice.user_id, before, await position());
      t.same(aliceView.changed, [alice.user_id, bob.user_id].sort(), 'alice learns of both changes');
      const bobView = await keys.deviceListChanges(bob.user_id, before, await position());
      t.same(
        bobView.changed,
        [alice.user_id],
        "bob learns of alice's own signatures, not of hers on his key",
      );

      // Refusals, each reported on its own key and not stored.
      const forged = sign(bobDevice.deviceKeys, mallory.user_id, 'ed25519:whatever', ed25519Pair().seed);
      const tamperedDevice = {
        ...sign(
          aliceDevice.deviceKeys,
          alice.user_id,
          `ed25519:${aliceCs.selfSigning.publicKey}`,
          aliceCs.selfSigning.seed,
        ),
        algorithms: [],
      };
      const badSignature = sign(
        aliceDevice.deviceKeys,
        alice.user_id,
        `ed25519:${aliceCs.selfSigning.publicKey}`,
        ed25519Pair().seed,
      );
      const wrongSigner = sign(
        bobCs.body.master_key,
        alice.user_id,
        `ed25519:${aliceCs.selfSigning.publicKey}`,
        aliceCs.selfSigning.seed,
      );
      const mixed = await sigUpload(alice, {
        [alice.user_id]: { [alice.device_id]: badSignature, NOSUCHKEY: deviceSigned },
        [bob.user_id]: { [bobCs.master.publicKey]: wrongSigner, [bob.device_id]: bobDevice.deviceKeys },
      });
      t.equal(mixed.statusCode, 200);
      const f = mixed.json().failures;
      t.equal(
        f[alice.user_id][alice.device_id].errcode,
        'M_INVALID_SIGNATURE',
        'a signature that does not verify',
      );
      t.equal(f[alice.user_id].NOSUCHKEY.errcode, 'M_NOT_FOUND', 'an unknown key');
      t.equal(
        f[bob.user_id][bobCs.master.publicKey].errcode,
        'M_INVALID_SIGNATURE',
        "another user's key signed by the self-signing key",
      );
      t.equal(f[bob.user_id][bob.device_id].errcode, 'M_NOT_FOUND', "another user's device cannot be signed");
      const tampered = await sigUpload(alice, { [alice.user_id]: { [alice.device_id]: tamperedDevice } });
      t.equal(
        tampered.json().failures[alice.user_id][alice.device_id].errcode,
        'M_INVALID_SIGNATURE',
        'an object that is not the stored key',
      );
      const byMallory = await sigUpload(mallory, { [bob.user_id]: { [bob.device_id]: forged } });
      t.equal(byMallory.json().failures[bob.user_id][bob.device_id].errcode, 'M_NOT_FOUND');
      const noUsk = await sigUpload(mallory, {
        [alice.user_id]: {
          [aliceCs.master.publicKey]: sign(
            aliceCs.body.master_key,
            mallory.user_id,
            'ed25519:X',
            ed25519Pair().seed,
          ),
        },
      });
      t.equal(
        noUsk.json().failures[alice.user_id][aliceCs.master.publicKey].errcode,
        'M_INVALID_SIGNATURE',
        'mallory has no user-signing key',
      );
      const stored = await db.selectFrom('e2e_cross_signing_signatures').selectAll().execute();
      t.equal(stored.length, 3, 'only the three good signatures were stored');
      const bad = await sigUpload(alice, { 'not a user': {} });
      t.equal(bad.statusCode, 400);
      t.equal(bad.json().errcode, 'M_INVALID_PARAM');
      const malformed = await sigUpload(alice, { [alice.user_id]: { [alice.device_id]: 'not an object' } });
      t.equal(malformed.statusCode, 400);
      t.equal(malformed.json().errcode, 'M_BAD_JSON');
    });

    t.test('replacing the master key alone drops the keys and signatures it stood for', async (t) => {
      const password = {
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: 'alice' },
        password: PASSWORD,
      };
      const next = crossSigning(alice.user_id);
      const res = await signingUpload(alice, { master_key: next.body.master_key, auth: password });
      t.equal(res.statusCode, 200, res.body);
      const asAlice = (await query(alice, { [alice.user_id]: [], [bob.user_id]: [] })).json();
      t.same(asAlice.master_keys[alice.user_id].keys, next.body.master_key.keys);
      t.same(
        asAlice.self_signing_keys,
        { [bob.user_id]: bobCs.body.self_signing_key },
        'her old self-signing key is gone',
      );
      t.same(asAlice.user_signing_keys, {}, 'and her old user-signing key');
      const device = asAlice.device_keys[alice.user_id][alice.device_id];
      t.same(
        Object.keys(device.signatures[alice.user_id]),
        [`ed25519:${alice.device_id}`],
        'the old self-signing signature is gone',
      );
      t.notOk(
        asAlice.master_keys[bob.user_id].signatures[alice.user_id],
        "and her old signature on bob's master key",
      );
      const stored = await db.selectFrom('e2e_cross_signing_signatures').selectAll().execute();
      t.same(stored, [], 'including the device signature on the replaced master key');
      const lone = await signingUpload(alice, { self_signing_key: aliceCs.body.self_signing_key });
      t.equal(lone.statusCode, 400, 'a self-signing key signed by the old master key is refused now');
      t.equal(lone.json().errcode, 'M_INVALID_SIGNATURE');
      aliceCs = next;
    });

    t.test('GET /keys/changes and device list changes follow shared rooms', async (t) => {
      const from = await token();
      const fromPos = await position();
      // mallory joins a public room with alice: she begins to share a room with alice.
      const pub = await post(alice, '/createRoom', { preset: 'public_chat' });
      const pubId: string = pub.json().room_id;
      await post(mallory, `/rooms/${enc(pubId)}/join`, {});
      const mid = await token();
      const midPos = await position();
      const res = await s.request('GET', `${V3}/keys/changes?from=${from}&to=${mid}`, {
        token: alice.access_token,
      });
      t.equal(res.statusCode, 200);
      t.same(res.json(), { changed: [mallory.user_id], left: [] }, 'a user who began to share a room');
      const malloryView = await keys.deviceListChanges(mallory.user_id, fromPos, midPos);
      t.same(malloryView.changed, [alice.user_id], 'and the other way round, by her own join');
      t.same(
        (await keys.deviceListChanges(bob.user_id, fromPos, midPos)).changed,
        [],
        'bob is not in that room',
      );

      // mallory changes her keys: alice hears; then mallory leaves, and alice sees her leave.
      await upload(mallory, { one_time_keys: oneTimeKeys(malloryDevice, ['M2']) });
      await signingUpload(mallory, crossSigning(mallory.user_id).body);
      const afterKeys = await position();
      t.same((await keys.deviceListChanges(alice.user_id, midPos, afterKeys)).changed, [mallory.user_id]);
      t.same(
        (await keys.deviceListChanges(bob.user_id, midPos, afterKeys)).changed,
        [],
        'bob shares no room with her',
      );
      await post(mallory, `/rooms/${enc(pubId)}/leave`, {});
      const end = await position();
      t.same(await keys.deviceListChanges(alice.user_id, afterKeys, end), {
        changed: [],
        left: [mallory.user_id],
      });
      t.same(await keys.deviceListChanges(mallory.user_id, afterKeys, end), {
        changed: [],
        left: [alice.user_id],
      });
      t.same(
        await keys.deviceListChanges(alice.user_id, end, end),
        { changed: [], left: [] },
        'an empty range',
      );

      const bad = await s.request('GET', `${V3}/keys/changes?from=nope&to=${mid}`, {
        token: alice.access_token,
      });
      t.equal(bad.statusCode, 400);
      t.equal(bad.json().errcode, 'M_INVALID_PARAM');
      const missing = await s.request('GET', `${V3}/keys/changes?from=${from}`, {
        token: alice.access_token,
      });
      t.equal(missing.statusCode, 400);
      const noToken = await s.request('GET', `${V3}/keys/changes?from=${from}&to=${mid}`);
      t.equal(noToken.statusCode, 401);
    });

    t.test('a device list change wakes the syncs of the user and of those sharing a room', async (t) => {
      const carol = await s.register('carol', { deviceId: 'CAROLDEV' });
      const invite = await post(alice, `/rooms/${enc(roomId)}/invite`, { user_id: carol.user_id });
      t.equal(invite.statusCode, 200);
      await post(carol, `/rooms/${enc(roomId)}/join`, {});
      let bobWoken = false;
      let malloryWokenAfter = 0;
      const bobWait = notifier.wait(bob.user_id, new Set(), 5000).then(() => {
        bobWoken = true;
      });
      const started = Date.now();
      const malloryWait = notifier.wait(mallory.user_id, new Set(), 300).then(() => {
        malloryWokenAfter = Date.now() - started;
      });
      t.equal((await upload(carol, { device_keys: testDevice(carol).deviceKeys })).statusCode, 200);
      await bobWait;
      t.ok(bobWoken && Date.now() - started < 4000, 'bob was woken');
      await malloryWait;
      t.ok(malloryWokenAfter >= 250, 'mallory only by her timeout');
    });

    t.test('deleting a device deletes its keys and records a device list change', async (t) => {
      const bobPhone = await s.login('bob', { deviceId: 'BOBPHONE' });
      const phoneDevice = testDevice(bobPhone);
      await upload(bobPhone, {
        device_keys: phoneDevice.deviceKeys,
        one_time_keys: oneTimeKeys(phoneDevice, ['P1']),
        fallback_keys: oneTimeKeys(phoneDevice, ['PF'], true),
      });
      t.ok((await query(alice, { [bob.user_id]: [] })).json().device_keys[bob.user_id].BOBPHONE);
      const before = await position();
      const del = await s.request('DELETE', `${V3}/devices/BOBPHONE`, {
        token: bob.access_token,
        body: {
          auth: {
            type: 'm.login.password',
            identifier: { type: 'm.id.user', user: 'bob' },
            password: PASSWORD,
          },
        },
      });
      t.equal(del.statusCode, 200, del.body);
      t.notOk(
        (await query(alice, { [bob.user_id]: [] })).json().device_keys[bob.user_id].BOBPHONE,
        'its keys are gone',
      );
      t.same(await keys.oneTimeKeyCounts(bob.user_id, 'BOBPHONE'), { signed_curve25519: 0 });
      t.same(await keys.unusedFallbackKeyTypes(bob.user_id, 'BOBPHONE'), []);
      t.same((await keys.deviceListChanges(alice.user_id, before, await position())).changed, [bob.user_id]);

      // logout does the same.
      const tablet = await s.login('bob', { deviceId: 'BOBTABLET' });
      await upload(tablet, { device_keys: testDevice(tablet).deviceKeys });
      const beforeLogout = await position();
      t.equal((await post(tablet, '/logout', {})).statusCode, 200);
      t.notOk((await query(alice, { [bob.user_id]: [] })).json().device_keys[bob.user_id].BOBTABLET);
      t.same((await keys.deviceListChanges(alice.user_id, beforeLogout, await position())).changed, [
        bob.user_id,
      ]);
      const rows = await db
        .selectFrom('e2e_device_keys')
        .select('device_id')
        .where('user_id', '=', bob.user_id)
        .execute();
      t.same(
        rows.map((r) => r.device_id),
        [bob.device_id],
      );
    });
  });
}
