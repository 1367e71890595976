// Server keys between homeservers: publishing, direct and notary fetching, caching, validity,
// rotation, and verifying events with the key ring (server-server API: Retrieving server keys).
import t from 'tap';
import { encodeBase64 } from '../src/protocol/base64.ts';
import { hashAndSignEvent } from '../src/protocol/event-signing.ts';
import { ROOM_VERSIONS } from '../src/protocol/room-versions.ts';
import { decodeKey, verifyJsonSignature } from '../src/protocol/signing.ts';
import { databaseBackends } from './helpers/backends.ts';
import {
  type RawServer,
  rawServer,
  rawServerEndpoint,
  rawServerKeys,
  startHomeservers,
} from './helpers/federation.ts';
import type { TestServer } from './helpers/server.ts';

// Several homeservers per backend: slow to start on a busy machine.
t.setTimeout(300_000);

const RV = ROOM_VERSIONS['12'];
const HOUR = 3_600_000;

/** A minimal event sent by `s` at `ts`, hashed and signed with its current key. */
function eventBy(s: TestServer, ts: number, body = 'hello') {
  const key = s.runtime.services.serverKeys.key;
  return hashAndSignEvent(
    {
      type: 'm.room.message',
      room_id: '!r:x',
      sender: `@alice:${s.config.serverName}`,
      content: { body },
      origin_server_ts: ts,
      depth: 1,
      prev_events: [],
      auth_events: [],
    },
    RV,
    s.config.serverName,
    key.keyId,
    key.seed,
  );
}

function fetchesOf(
  network: { sent: Array<{ from: string; destination: string; uri: string }> },
  from: string,
) {
  return network.sent.filter((r) => r.from === from && r.uri.startsWith('/_matrix/key/v2/')).length;
}

for (const backend of databaseBackends()) {
  t.test(`server keys on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(
      t,
      backend,
      ['hs1.test', 'hs2.test', 'notary.test'],
      (name) =>
        name === 'hs2.test' ? { trustedKeyServers: [{ serverName: 'notary.test', verifyKeys: {} }] } : {},
    );
    const [hs1, hs2, notary] = servers as [TestServer, TestServer, TestServer];
    const ring2 = hs2.runtime.federation.keyRing;
    const key1 = hs1.runtime.services.serverKeys.key;

    t.test("two servers fetch each other's keys directly, and cache them", async (t) => {
      const got = await ring2.getKey('hs1.test', key1.keyId, Date.now(), { kind: 'request' });
      t.ok(got.ok, 'hs2 finds hs1 key');
      if (got.ok) t.same(encodeBase64(got.publicKey), encodeBase64(key1.publicKey), 'the key hs1 holds');
      const back = await hs1.runtime.federation.keyRing.getKey(
        'hs2.test',
        hs2.runtime.services.serverKeys.key.keyId,
        Date.now(),
        { kind: 'request' },
      );
      t.ok(back.ok, 'hs1 finds hs2 key');
      const before = fetchesOf(network, 'hs2.test');
      t.ok((await ring2.getKey('hs1.test', key1.keyId, Date.now(), { kind: 'request' })).ok);
      t.equal(fetchesOf(network, 'hs2.test'), before, 'the second lookup is served from the database');
      const stored = await hs2.runtime.database.db
        .selectFrom('remote_server_keys')
        .selectAll()
        .where('server_name', '=', 'hs1.test')
        .execute();
      t.equal(stored.length, 1);
      t.equal(stored[0]!.fetched_from, 'hs1.test');
      t.ok(stored[0]!.valid_until_ts! <= Date.now() + 7 * 24 * HOUR, 'validity capped at 7 days');
    });

    t.test('an unknown key ID is refused with a reason', async (t) => {
      const got = await ring2.getKey('hs1.test', 'ed25519:nope', Date.now(), { kind: 'request' });
      t.equal(got.ok, false);
      if (!got.ok) t.match(got.reason, /no key ed25519:nope of hs1\.test/);
      const unreachable = await ring2.getKey('gone.test', 'ed25519:x', Date.now(), { kind: 'request' });
      t.equal(unreachable.ok, false);
      if (!unreachable.ok) t.match(unreachable.reason, /gone\.test: .*no route/);
    });

    t.test('the notary endpoints return responses signed by the server and by the notary', async (t) => {
      const get = await notary.request('GET', '/_matrix/key/v2/query/hs1.test');
      t.equal(get.statusCode, 200);
      const [response] = get.json().server_keys;
      t.equal(response.server_name, 'hs1.test');
      t.ok(verifyJsonSignature(response, 'hs1.test', key1.keyId, key1.publicKey), 'hs1 signature kept');
      const nk = notary.runtime.services.serverKeys.key;
      t.ok(verifyJsonSignature(response, 'notary.test', nk.keyId, nk.publicKey), 'and the notary signs it');

      const post = await notary.request('POST', '/_matrix/key/v2/query', {
        body: {
          server_keys: {
            'hs1.test': { [key1.keyId]: { minimum_valid_until_ts: Date.now() } },
            'notary.test': {},
            'gone.test': {},
          },
        },
      });
      t.equal(post.statusCode, 200);
      const names = post
        .json()
        .server_keys.map((r: { server_name: string }) => r.server_name)
        .sort();
      t.same(names, ['hs1.test', 'notary.test'], 'an unreachable server without cached keys is left out');
      t.same((await notary.request('POST', '/_matrix/key/v2/query', { body: { server_keys: {} } })).json(), {
        server_keys: [],
      });

      // A cached response is served while the server is unreachable.
      network.cut('notary.test', 'hs1.test');
      const cached = await notary.request(
        'GET',
        `/_matrix/key/v2/query/hs1.test?minimum_valid_until_ts=${Date.now()}`,
      );
      t.equal(cached.json().server_keys.length, 1, 'from the cache');
      network.heal('notary.test', 'hs1.test');
    });

    t.test('the notary endpoints refuse malformed queries', async (t) => {
      const bad = await notary.request('GET', '/_matrix/key/v2/query/not%20a%20name');
      t.equal(bad.statusCode, 400);
      t.equal(bad.json().errcode, 'M_INVALID_PARAM');
      const badTs = await notary.request('GET', '/_matrix/key/v2/query/hs1.test?minimum_valid_until_ts=soon');
      t.equal(badTs.statusCode, 400);
      for (const body of [
        {},
        { server_keys: [] },
        { server_keys: { 'hs1.test': { k: { minimum_valid_until_ts: 'x' } } } },
      ]) {
        const res = await notary.request('POST', '/_matrix/key/v2/query', { body });
        t.equal(res.statusCode, 400, JSON.stringify(body));
        t.equal(res.json().errcode, 'M_BAD_JSON');
      }
      const badName = await notary.request('POST', '/_matrix/key/v2/query', {
        body: { server_keys: { 'a b': {} } },
      });
      t.equal(badName.json().errcode, 'M_INVALID_PARAM');
    });

    t.test('keys through a configured notary when the server cannot be reached', async (t) => {
      // hs3 is reachable by the notary only.
      const hs3 = rawServer('hs3.test', 'k3');
      network.servers.set(
        'hs3.test',
        rawServerEndpoint(() => rawServerKeys(hs3)),
      );
      network.cut('hs2.test', 'hs3.test');
      const got = await ring2.getKey('hs3.test', hs3.key.keyId, Date.now(), { kind: 'request' });
      t.ok(got.ok, 'found through the notary');
      const row = await hs2.runtime.database.db
        .selectFrom('remote_server_keys')
        .select('fetched_from')
        .where('server_name', '=', 'hs3.test')
        .executeTakeFirstOrThrow();
      t.equal(row.fetched_from, 'notary.test');

      // A notary answer that is not signed by the notary is refused.
      const hs4 = rawServer('hs4.test', 'k4');
      const liar = rawServer('notary.test', 'forged');
      network.servers.set(
        'hs4.test',
        rawServerEndpoint(() => rawServerKeys(hs4)),
      );
      network.cut('hs2.test', 'hs4.test');
      const real = network.servers.get('notary.test')!;
      network.servers.set('notary.test', {
        inject: async (opts) => {
          if (opts.url !== '/_matrix/key/v2/query') return real.inject(opts);
          const forged = rawServerKeys(liar);
          return {
            statusCode: 200,
            headers: {},
            rawPayload: Buffer.from(
              JSON.stringify({
                server_keys: [
                  {
                    ...rawServerKeys(hs4),
                    signatures: { ...rawServerKeys(hs4).signatures, ...forged.signatures },
                  },
                ],
              }),
            ),
          };
        },
      });
      const refused = await ring2.getKey('hs4.test', hs4.key.keyId, Date.now(), { kind: 'request' });
      t.equal(refused.ok, false, 'a response without the notary signature is not used');
      network.servers.set('notary.test', real);
    });

    t.test('responses that are not self-signed, for another server, or malformed are refused', async (t) => {
      // A key ID of its own per case: a failed lookup is not repeated for 30 s.
      const cases: Array<[string, (eve: RawServer) => object, RegExp]> = [
        [
          'signed by another key',
          (eve) => ({
            ...rawServerKeys(eve),
            signatures: rawServerKeys(rawServer('eve.test', 'other')).signatures,
          }),
          /not signed by eve\.test/,
        ],
        [
          'for another server',
          (eve) => rawServerKeys({ ...eve, serverName: 'mallory.test' }),
          /not eve\.test/,
        ],
        [
          'tampered after signing',
          (eve) => ({ ...rawServerKeys(eve), valid_until_ts: Date.now() + 10 * HOUR }),
          /does not verify/,
        ],
        [
          'no valid_until_ts',
          (eve) => ({ ...rawServerKeys(eve), valid_until_ts: 'never' }),
          /valid_until_ts/,
        ],
      ];
      for (const [i, [what, keys, reason]] of cases.entries()) {
        const eve = rawServer('eve.test', `e${i}`);
        network.servers.set(
          'eve.test',
          rawServerEndpoint(() => keys(eve)),
        );
        const got = await ring2.getKey('eve.test', eve.key.keyId, Date.now(), { kind: 'request' });
        t.equal(got.ok, false, what);
        if (!got.ok) t.match(got.reason, reason, what);
      }
      const again = await ring2.getKey('eve.test', 'ed25519:e0', Date.now(), { kind: 'request' });
      t.equal(again.ok, false);
      if (!again.ok) t.match(again.reason, /retrying after 30 s/, 'a failed lookup is not repeated at once');
      network.servers.delete('eve.test');
    });

    t.test(
      'validity: valid_until_ts for requests and room version 5+ events, old keys before expiry',
      async (t) => {
        const now = Date.now();
        const dave = rawServer('dave.test', 'd1');
        network.servers.set(
          'dave.test',
          rawServerEndpoint(() => rawServerKeys(dave, { validUntilTs: now - HOUR })),
        );
        const forRequest = await ring2.getKey('dave.test', dave.key.keyId, now, { kind: 'request' });
        t.equal(forRequest.ok, false, 'a key past its valid_until_ts does not sign requests');
        if (!forRequest.ok) t.match(forRequest.reason, /not valid at/);
        const older = await ring2.getKey('dave.test', dave.key.keyId, now - 2 * HOUR, {
          kind: 'event',
          enforceValidUntil: true,
        });
        t.ok(older.ok, 'but verifies events sent before it');
        const later = await ring2.getKey('dave.test', dave.key.keyId, now, {
          kind: 'event',
          enforceValidUntil: true,
        });
        t.equal(later.ok, false, 'not events sent after it');
        const v4 = await ring2.getKey('dave.test', dave.key.keyId, now, {
          kind: 'event',
          enforceValidUntil: false,
        });
        t.ok(v4.ok, 'room versions 1-4 ignore valid_until_ts');

        // A valid_until_ts years ahead counts for 7 days only.
        const far = rawServer('far.test', 'f1');
        network.servers.set(
          'far.test',
          rawServerEndpoint(() => rawServerKeys(far, { validUntilTs: now + 1000 * 24 * HOUR })),
        );
        t.ok((await ring2.getKey('far.test', far.key.keyId, now, { kind: 'request' })).ok);
        const eightDays = await ring2.getKey('far.test', far.key.keyId, now + 8 * 24 * HOUR, {
          kind: 'event',
          enforceValidUntil: true,
        });
        t.equal(eightDays.ok, false, 'capped at 7 days after fetching');
      },
    );

    t.test('verifyEvent checks signatures over the redacted event', async (t) => {
      const ts = Date.now();
      const event = eventBy(hs1, ts);
      t.same(await ring2.verifyEvent(event, RV, ['hs1.test'], ts), { ok: true });
      t.same(
        await ring2.verifyEvent({ ...event, content: { body: 'changed' } }, RV, ['hs1.test'], ts),
        { ok: true },
        'content is not covered by the signature (the content hash is)',
      );
      const tampered = await ring2.verifyEvent({ ...event, depth: 2 }, RV, ['hs1.test'], ts);
      t.equal(tampered.ok, false, 'a changed top-level key fails');
      if (!tampered.ok) t.match(tampered.reason, /does not verify/);
      const missing = await ring2.verifyEvent(event, RV, ['hs1.test', 'hs2.test'], ts);
      t.equal(missing.ok, false);
      if (!missing.ok) t.match(missing.reason, /no ed25519 signature by hs2\.test/);
      t.same(
        await hs1.runtime.federation.keyRing.verifyEvent(event, RV, ['hs1.test'], ts),
        { ok: true },
        'a server verifies its own events from its key table',
      );
    });

    t.test('key rotation keeps old signatures verifiable', async (t) => {
      const before = Date.now() - 1000;
      const oldEvent = eventBy(hs1, before);
      const oldKeyId = hs1.runtime.services.serverKeys.key.keyId;
      t.same(await ring2.verifyEvent(oldEvent, RV, ['hs1.test'], before), { ok: true });

      const { previous, current } = await hs1.runtime.services.serverKeys.rotate();
      t.equal(previous, oldKeyId);
      t.not(current, oldKeyId);
      const published = (await hs1.request('GET', '/_matrix/key/v2/server')).json();
      t.same(Object.keys(published.verify_keys), [current], 'the new key is current');
      t.ok(published.old_verify_keys[oldKeyId], 'the old key is published as old');
      t.type(published.old_verify_keys[oldKeyId].expired_ts, 'number');
      const newKey = published.verify_keys[current].key;
      t.ok(verifyJsonSignature(published, 'hs1.test', current, decodeKey(newKey)), 'signed with the new key');

      // hs2 learns the new key on its first signature by it, and keeps the old one for old events.
      const fresh = eventBy(hs1, Date.now() + 1);
      t.same(await ring2.verifyEvent(fresh, RV, ['hs1.test'], fresh.origin_server_ts), { ok: true });
      t.same(
        await ring2.verifyEvent(oldEvent, RV, ['hs1.test'], before),
        { ok: true },
        'old event still verifies',
      );
      const stored = await hs2.runtime.database.db
        .selectFrom('remote_server_keys')
        .selectAll()
        .where('server_name', '=', 'hs1.test')
        .where('key_id', '=', oldKeyId)
        .executeTakeFirstOrThrow();
      t.type(stored.expired_ts, 'number', 'hs2 recorded that the old key expired');
      const oldForRequests = await ring2.getKey('hs1.test', oldKeyId, Date.now(), { kind: 'request' });
      t.equal(oldForRequests.ok, false, 'the old key no longer signs requests');
      const afterExpiry = await ring2.getKey('hs1.test', oldKeyId, Date.now() + HOUR, {
        kind: 'event',
        enforceValidUntil: true,
      });
      t.equal(afterExpiry.ok, false, 'nor events sent after it expired');
      // The notary, which cached hs1's keys before the rotation, verifies the old event too.
      t.same(await notary.runtime.federation.keyRing.verifyEvent(oldEvent, RV, ['hs1.test'], before), {
        ok: true,
      });
    });
  });
}
