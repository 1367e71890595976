// The wire format per room version (rooms/v1.md and v3.md "Event format"): fromWirePdu and
// toWirePdu, and hashes, event IDs and signatures over the wire form.
import t from 'tap';
import { decodeBase64 } from '../../src/protocol/base64.ts';
import type { RoomEvent } from '../../src/protocol/event.ts';
import { hashAndSignEvent, verifyEventSignature } from '../../src/protocol/event-signing.ts';
import { checkContentHash, computeEventId, referenceHashes } from '../../src/protocol/hashes.ts';
import {
  fromWirePdu,
  isSigningKeyValidForEvent,
  requiredSignatureServers,
  toWirePdu,
  WireFormatError,
} from '../../src/protocol/pdu-wire.ts';
import { ROOM_VERSIONS, type RoomVersion } from '../../src/protocol/room-versions.ts';
import { publicKeyFromSeed } from '../../src/protocol/signing.ts';

const SEED = decodeBase64('YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1');
const PUBLIC_KEY = publicKeyFromSeed(SEED);
const v1 = ROOM_VERSIONS['1'];
const v3 = ROOM_VERSIONS['3'];
const v10 = ROOM_VERSIONS['10'];

function sign<E extends object>(event: E, rv: RoomVersion) {
  return hashAndSignEvent(event, rv, 'a.test', 'ed25519:1', SEED);
}
function verifies(event: object, rv: RoomVersion): boolean {
  return verifyEventSignature(event, rv, 'a.test', 'ed25519:1', PUBLIC_KEY);
}

/** A v1 room: a create event and alice's join, signed as alice's server would. */
function v1Room(rv: RoomVersion = v1) {
  const create = sign(
    {
      event_id: '$create:a.test',
      type: 'm.room.create',
      room_id: '!r:a.test',
      sender: '@alice:a.test',
      state_key: '',
      content: { creator: '@alice:a.test' },
      origin: 'a.test',
      origin_server_ts: 1000,
      depth: 1,
      prev_events: [],
      auth_events: [],
    },
    rv,
  ) as RoomEvent;
  const hash = referenceHashes(create, rv);
  const join = sign(
    {
      event_id: '$join:a.test',
      type: 'm.room.member',
      room_id: '!r:a.test',
      sender: '@alice:a.test',
      state_key: '@alice:a.test',
      content: { membership: 'join' },
      origin: 'a.test',
      origin_server_ts: 1001,
      depth: 2,
      prev_events: ['$create:a.test'],
      auth_events: ['$create:a.test'],
      reference_hashes: { '$create:a.test': hash },
    },
    rv,
  ) as RoomEvent;
  return { create, join, hash };
}

t.test('v1 and v2: the wire form carries event_id and [id, hashes] pairs', async (t) => {
  for (const rv of [v1, ROOM_VERSIONS['2']]) {
    const { join, hash } = v1Room(rv);
    const wire = toWirePdu(join, rv);
    t.equal(wire.event_id, '$join:a.test', `v${rv.id}: event_id on the wire`);
    t.same(wire.prev_events, [['$create:a.test', hash]], `v${rv.id}: prev_events pairs`);
    t.same(wire.auth_events, [['$create:a.test', hash]], `v${rv.id}: auth_events pairs`);
    t.notOk(Object.hasOwn(wire, 'reference_hashes'), `v${rv.id}: no internal keys on the wire`);

    const back = fromWirePdu(JSON.parse(JSON.stringify(wire)), rv);
    t.same(back, join, `v${rv.id}: fromWirePdu gives the internal event back`);
    t.equal(computeEventId(back, rv), '$join:a.test', `v${rv.id}: the ID is the carried one`);
    t.ok(verifies(join, rv), `v${rv.id}: the signature verifies on the internal event`);
    t.ok(verifies(wire, rv), `v${rv.id}: and on the wire event`);
    t.ok(checkContentHash(join, rv), `v${rv.id}: the content hash covers the wire form`);
    const otherHash = { ...join, reference_hashes: { '$create:a.test': { sha256: 'AAAA' } } };
    t.notOk(verifies(otherHash, rv), `v${rv.id}: the reference hashes are signed`);
    t.notOk(verifies({ ...join, event_id: '$other:a.test' }, rv), `v${rv.id}: so is the event ID`);
  }
});

t.test('v1: the reference hash of an event covers its ID and pairs', async (t) => {
  const { create, join } = v1Room();
  t.not(
    referenceHashes(create, v1).sha256,
    referenceHashes({ ...create, event_id: '$c2:a.test' }, v1).sha256,
  );
  t.match(referenceHashes(join, v1).sha256, /^[A-Za-z0-9+/]{43}$/, 'unpadded standard base64');
});

t.test('v1 wire errors', async (t) => {
  const { join } = v1Room();
  const wire = toWirePdu(join, v1);
  t.throws(() => toWirePdu({ ...join, reference_hashes: {} }, v1), WireFormatError, 'a hash is missing');
  t.throws(() => toWirePdu({ ...join, event_id: undefined }, v1), WireFormatError, 'no event ID');
  t.throws(() => fromWirePdu({ ...wire, event_id: undefined }, v1), WireFormatError, 'no event_id');
  t.throws(() => fromWirePdu({ ...wire, prev_events: ['$create:a.test'] }, v1), WireFormatError, 'a bare ID');
  t.throws(() => fromWirePdu({ ...wire, prev_events: [['$c:a.test']] }, v1), WireFormatError, 'no hashes');
  t.throws(
    () => fromWirePdu({ ...wire, auth_events: [['$c:a.test', { sha256: 5 }]] }, v1),
    WireFormatError,
    'a hash that is no string',
  );
  t.throws(() => fromWirePdu({ ...wire, auth_events: 'x' }, v1), WireFormatError, 'not a list');
  t.throws(() => fromWirePdu([], v1), WireFormatError, 'not an object');
  t.throws(() => computeEventId({ type: 'x' }, v1), 'v1 IDs cannot be computed');
});

t.test('v3+: the wire form has no event_id; fromWirePdu computes it', async (t) => {
  for (const rv of [v3, ROOM_VERSIONS['4'], v10]) {
    const pdu = sign(
      {
        type: 'm.room.message',
        room_id: '!r:a.test',
        sender: '@alice:a.test',
        content: { body: 'hi' },
        origin_server_ts: 5,
        depth: 3,
        prev_events: ['$p'],
        auth_events: ['$a'],
      },
      rv,
    );
    const event = fromWirePdu(JSON.parse(JSON.stringify({ ...pdu, event_id: '$ignored' })), rv);
    t.equal(event.event_id, computeEventId(pdu, rv), `v${rv.id}: the ID is the reference hash`);
    t.equal(computeEventId(event, rv), event.event_id, `v${rv.id}: the internal event_id is not hashed`);
    t.same(toWirePdu(event, rv), pdu, `v${rv.id}: toWirePdu drops it again`);
    t.ok(verifies(event, rv), `v${rv.id}: internal events verify`);
    t.ok(checkContentHash(event, rv), `v${rv.id}: and pass the content hash check`);
    t.throws(
      () => fromWirePdu({ ...pdu, prev_events: [['$p', {}]] }, rv),
      WireFormatError,
      `v${rv.id}: pairs`,
    );
  }
  const pdu = { type: 'x', sender: '@a:a.test', content: {}, prev_events: [], auth_events: [], depth: 1 };
  t.match(computeEventId(pdu, v3), /^\$[A-Za-z0-9+/]{43}$/, 'v3: standard alphabet');
  t.match(computeEventId(pdu, v10), /^\$[A-Za-z0-9_-]{43}$/, 'v4+: URL-safe alphabet');
});

t.test('requiredSignatureServers: the sender, and in v1/v2 the event ID server', async (t) => {
  const event = { sender: '@bob:b.test', event_id: '$e:c.test' };
  t.same(requiredSignatureServers(event, v1), ['b.test', 'c.test']);
  t.same(requiredSignatureServers(event, ROOM_VERSIONS['2']), ['b.test', 'c.test']);
  t.same(requiredSignatureServers({ ...event, event_id: '$e:b.test' }, v1), ['b.test'], 'once');
  t.same(requiredSignatureServers({ ...event, event_id: '$hash' }, v3), ['b.test']);
});

t.test('isSigningKeyValidForEvent: valid_until_ts counts from v5', async (t) => {
  const key = { validUntilTs: 1000 };
  for (const id of ['1', '4'] as const) {
    t.ok(isSigningKeyValidForEvent(key, 5000, ROOM_VERSIONS[id]), `v${id}: an old key still counts`);
  }
  for (const id of ['5', '12'] as const) {
    t.notOk(isSigningKeyValidForEvent(key, 5000, ROOM_VERSIONS[id]), `v${id}: sent after valid_until_ts`);
    t.ok(isSigningKeyValidForEvent(key, 1000, ROOM_VERSIONS[id]), `v${id}: sent at valid_until_ts`);
    t.notOk(isSigningKeyValidForEvent({}, 1, ROOM_VERSIONS[id]), `v${id}: no valid_until_ts`);
  }
  t.notOk(isSigningKeyValidForEvent({ expiredTs: 10 }, 11, v1), 'expired before the event: never');
  t.ok(isSigningKeyValidForEvent({ expiredTs: 10, validUntilTs: 20 }, 10, v10), 'expired after it');
});
