import t from 'tap';
import { decodeBase64 } from '../../src/protocol/base64.ts';
import { hashAndSignEvent, verifyEventSignature } from '../../src/protocol/event-signing.ts';
import { checkContentHash } from '../../src/protocol/hashes.ts';
import { redactEvent } from '../../src/protocol/redaction.ts';
import { ROOM_VERSIONS } from '../../src/protocol/room-versions.ts';
import { publicKeyFromSeed } from '../../src/protocol/signing.ts';

const v1 = ROOM_VERSIONS['1'];
const v10 = ROOM_VERSIONS['10'];
const v11 = ROOM_VERSIONS['11'];

// appendices: Cryptographic Test Vectors (Signing Key, Event Signing).
const SEED = decodeBase64('YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1');
const PUBLIC_KEY = publicKeyFromSeed(SEED);
const sign = (event: object, version = v10) => hashAndSignEvent(event, version, 'domain', 'ed25519:1', SEED);

const MINIMAL_EVENT = {
  room_id: '!x:domain',
  sender: '@a:domain',
  origin: 'domain',
  origin_server_ts: 1000000,
  signatures: {},
  hashes: {},
  type: 'X',
  content: {},
  prev_events: [],
  auth_events: [],
  depth: 3,
  unsigned: { age_ts: 1000000 },
};

const MESSAGE_EVENT = {
  content: { body: 'Here is the message content' },
  event_id: '$0:domain',
  origin: 'domain',
  origin_server_ts: 1000000,
  type: 'm.room.message',
  room_id: '!r:domain',
  sender: '@u:domain',
  signatures: {},
  unsigned: { age_ts: 1000000 },
};

// The spec's vectors predate room version 11: their signatures cover the top-level `origin`,
// which only the pre-v11 redaction rules keep. We therefore reproduce them with v10's rules; the
// second carries an `event_id`, which only the wire format of room versions 1 and 2 has.
t.test('appendices: the minimally-sized event', async (t) => {
  t.same(sign(MINIMAL_EVENT), {
    auth_events: [],
    content: {},
    depth: 3,
    hashes: { sha256: '5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos' },
    origin: 'domain',
    origin_server_ts: 1000000,
    prev_events: [],
    room_id: '!x:domain',
    sender: '@a:domain',
    signatures: {
      domain: {
        'ed25519:1': 'KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg',
      },
    },
    type: 'X',
    unsigned: { age_ts: 1000000 },
  });
});

t.test('appendices: the event with redactable content (room version 1 wire format)', async (t) => {
  t.same(sign(MESSAGE_EVENT, v1), {
    content: { body: 'Here is the message content' },
    event_id: '$0:domain',
    hashes: { sha256: 'onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g' },
    origin: 'domain',
    origin_server_ts: 1000000,
    type: 'm.room.message',
    room_id: '!r:domain',
    sender: '@u:domain',
    signatures: {
      domain: {
        'ed25519:1': 'Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA',
      },
    },
    unsigned: { age_ts: 1000000 },
  });
});

t.test('under v11 rules the same events get other signatures (origin is no longer kept)', async (t) => {
  t.not(
    sign(MINIMAL_EVENT, v11).signatures.domain?.['ed25519:1'],
    sign(MINIMAL_EVENT).signatures.domain?.['ed25519:1'],
  );
  t.ok(verifyEventSignature(sign(MINIMAL_EVENT, v11), v11, 'domain', 'ed25519:1', PUBLIC_KEY));
  t.notOk(
    verifyEventSignature(sign(MINIMAL_EVENT, v11), v10, 'domain', 'ed25519:1', PUBLIC_KEY),
    'a signature is only valid under the room version it was made for',
  );
});

t.test('a signed event verifies whole and redacted; the content hash tells them apart', async (t) => {
  for (const version of [v10, v11]) {
    const signed = sign(MESSAGE_EVENT, version);
    const redacted = redactEvent(signed, version);
    t.ok(verifyEventSignature(signed, version, 'domain', 'ed25519:1', PUBLIC_KEY), `v${version.id}: full`);
    t.ok(
      verifyEventSignature(redacted, version, 'domain', 'ed25519:1', PUBLIC_KEY),
      `v${version.id}: redacted`,
    );
    t.ok(checkContentHash(signed, version), `v${version.id}: full copy passes the hash check`);
    t.notOk(checkContentHash(redacted, version), `v${version.id}: redacted copy fails the hash check`);

    const edited = { ...signed, content: { body: 'forged' } };
    t.ok(
      verifyEventSignature(edited, version, 'domain', 'ed25519:1', PUBLIC_KEY),
      `v${version.id}: edited content keeps the signature valid...`,
    );
    t.notOk(checkContentHash(edited, version), `v${version.id}: ...but fails the content hash`);
    t.notOk(
      verifyEventSignature(
        { ...signed, sender: '@mallory:domain' },
        version,
        'domain',
        'ed25519:1',
        PUBLIC_KEY,
      ),
      `v${version.id}: an edited essential key breaks the signature`,
    );
  }
});

t.test('hashAndSignEvent keeps other signatures and leaves its input alone', async (t) => {
  const input = { ...MINIMAL_EVENT, signatures: { other: { 'ed25519:o': 'c2ln' } } };
  const signed = sign(input);
  t.same(Object.keys(signed.signatures).sort(), ['domain', 'other']);
  t.same(input.signatures, { other: { 'ed25519:o': 'c2ln' } });
  t.same(input.hashes, {}, 'input hashes untouched');
});
