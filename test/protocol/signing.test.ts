import * as ed from '@noble/ed25519';
import t from 'tap';
import { decodeBase64, encodeBase64 } from '../../src/protocol/base64.ts';
import {
  decodeKey,
  encodeKey,
  generateSigningKey,
  isValidKeyId,
  publicKeyFromSeed,
  signingKeyFromSeed,
  signingKeyIds,
  signJson,
  verifyJsonSignature,
} from '../../src/protocol/signing.ts';

// appendices: Cryptographic Test Vectors > Signing Key. The seed is given in unpadded base64.
const SEED = decodeBase64('YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1');
const SERVER_NAME = 'domain';
const KEY_ID = 'ed25519:1';
const PUBLIC_KEY = publicKeyFromSeed(SEED);

t.test('appendices: JSON signing of the empty object', async (t) => {
  const signed = signJson({}, SERVER_NAME, KEY_ID, SEED);
  t.same(signed, {
    signatures: {
      domain: {
        'ed25519:1': 'K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ',
      },
    },
  });
  t.ok(verifyJsonSignature(signed, SERVER_NAME, KEY_ID, PUBLIC_KEY));
});

t.test('appendices: JSON signing of an object with data', async (t) => {
  const signed = signJson({ one: 1, two: 'Two' }, SERVER_NAME, KEY_ID, SEED);
  t.same(signed, {
    one: 1,
    signatures: {
      domain: {
        'ed25519:1': 'KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw',
      },
    },
    two: 'Two',
  });
  t.ok(verifyJsonSignature(signed, SERVER_NAME, KEY_ID, PUBLIC_KEY));
});

t.test('the seed is 32 bytes and yields a 32-byte public key', async (t) => {
  t.equal(SEED.length, 32);
  t.equal(PUBLIC_KEY.length, 32);
  t.same(decodeKey(encodeKey(PUBLIC_KEY)), PUBLIC_KEY, 'keys round-trip through unpadded base64');
  t.notMatch(encodeKey(PUBLIC_KEY), /=/, 'no padding');
});

t.test('unsigned and signatures are not covered; everything else is', async (t) => {
  const signed = signJson({ one: 1, unsigned: { age_ts: 5 } }, SERVER_NAME, KEY_ID, SEED);
  t.same(signed.unsigned, { age_ts: 5 }, 'unsigned is put back');
  t.ok(verifyJsonSignature({ ...signed, unsigned: { age_ts: 99 } }, SERVER_NAME, KEY_ID, PUBLIC_KEY));
  t.ok(
    verifyJsonSignature(
      { ...signed, signatures: { ...signed.signatures, other: { 'ed25519:x': 'AAAA' } } },
      SERVER_NAME,
      KEY_ID,
      PUBLIC_KEY,
    ),
    'other signers may add their signatures',
  );
  t.notOk(verifyJsonSignature({ ...signed, one: 2 }, SERVER_NAME, KEY_ID, PUBLIC_KEY), 'changed value');
  t.notOk(verifyJsonSignature({ ...signed, extra: true }, SERVER_NAME, KEY_ID, PUBLIC_KEY), 'added key');
  // Key order does not matter: the signature covers the canonical form.
  const reordered = { signatures: signed.signatures, unsigned: signed.unsigned, one: 1 };
  t.ok(verifyJsonSignature(reordered, SERVER_NAME, KEY_ID, PUBLIC_KEY));
});

t.test('signJson keeps existing signatures and does not modify its input', async (t) => {
  const input = { a: 1, signatures: { other: { 'ed25519:x': 'c2ln' } } };
  const signed = signJson(input, SERVER_NAME, KEY_ID, SEED);
  t.same(Object.keys(signed.signatures).sort(), ['domain', 'other']);
  t.equal(signed.signatures.other?.['ed25519:x'], 'c2ln');
  t.same(input, { a: 1, signatures: { other: { 'ed25519:x': 'c2ln' } } }, 'input untouched');

  const twice = signJson(signJson({ a: 1 }, SERVER_NAME, KEY_ID, SEED), SERVER_NAME, 'ed25519:2', SEED);
  t.same(signingKeyIds(twice, SERVER_NAME), ['ed25519:1', 'ed25519:2'], 'a second key adds, not replaces');
});

t.test('verification fails closed', async (t) => {
  const signed = signJson({ one: 1 }, SERVER_NAME, KEY_ID, SEED);
  const other = generateSigningKey('ed25519:other');
  t.notOk(verifyJsonSignature(signed, SERVER_NAME, KEY_ID, other.publicKey), 'wrong public key');
  t.notOk(verifyJsonSignature(signed, 'elsewhere', KEY_ID, PUBLIC_KEY), 'no signature from that server');
  t.notOk(verifyJsonSignature(signed, SERVER_NAME, 'ed25519:2', PUBLIC_KEY), 'no signature with that key');
  t.notOk(verifyJsonSignature({ one: 1 }, SERVER_NAME, KEY_ID, PUBLIC_KEY), 'no signatures at all');
  t.notOk(
    verifyJsonSignature({ one: 1, signatures: 'nope' }, SERVER_NAME, KEY_ID, PUBLIC_KEY),
    'malformed signatures',
  );
  const withSig = (sig: string) => ({ one: 1, signatures: { domain: { [KEY_ID]: sig } } });
  t.notOk(verifyJsonSignature(withSig('!!!'), SERVER_NAME, KEY_ID, PUBLIC_KEY), 'signature not base64');
  t.notOk(verifyJsonSignature(withSig('AAAA'), SERVER_NAME, KEY_ID, PUBLIC_KEY), 'signature too short');
  t.notOk(
    verifyJsonSignature({ ...signed, one: 1.5 }, SERVER_NAME, KEY_ID, PUBLIC_KEY),
    'not canonical JSON',
  );
  t.notOk(verifyJsonSignature(signed, SERVER_NAME, KEY_ID, PUBLIC_KEY.subarray(1)), 'short public key');

  // A signature that is one bit off.
  const sig = decodeBase64(signed.signatures.domain![KEY_ID]!);
  sig[10]! ^= 1;
  t.notOk(verifyJsonSignature(withSig(encodeBase64(sig)), SERVER_NAME, KEY_ID, PUBLIC_KEY), 'flipped bit');
});

t.test('a padded signature still verifies (decoders accept padding)', async (t) => {
  const signed = signJson({ one: 1 }, SERVER_NAME, KEY_ID, SEED);
  const padded = `${signed.signatures.domain![KEY_ID]}==`;
  t.ok(
    verifyJsonSignature(
      { one: 1, signatures: { domain: { [KEY_ID]: padded } } },
      SERVER_NAME,
      KEY_ID,
      PUBLIC_KEY,
    ),
  );
});

t.test('key generation', async (t) => {
  const a = generateSigningKey('ed25519:a_1');
  const b = generateSigningKey('ed25519:a_1');
  t.equal(a.seed.length, 32);
  t.not(encodeKey(a.seed), encodeKey(b.seed), 'seeds are random');
  t.same(a.publicKey, publicKeyFromSeed(a.seed));
  const signed = signJson({ x: 'y' }, 'example.org', a.keyId, a.seed);
  t.ok(verifyJsonSignature(signed, 'example.org', a.keyId, a.publicKey));
  t.same(signingKeyFromSeed(KEY_ID, SEED).publicKey, PUBLIC_KEY);
  t.throws(() => publicKeyFromSeed(new Uint8Array(31)), /32 bytes/);
  t.throws(() => decodeKey('AAAA'), /32 bytes/);
});

t.test('key ID grammar: ed25519 and a version of [a-zA-Z0-9_]', async (t) => {
  for (const good of ['ed25519:1', 'ed25519:a_XyZ9', 'ed25519:auto', 'ed25519:___']) {
    t.ok(isValidKeyId(good), good);
  }
  for (const bad of [
    'ed25519:',
    'ed25519',
    'curve25519:1',
    'ed25519:a-b',
    'ed25519:a.b',
    'ed25519:ä',
    ':1',
  ]) {
    t.notOk(isValidKeyId(bad), bad);
  }
  t.throws(() => signJson({}, SERVER_NAME, 'ed25519:bad-id', SEED), /invalid ed25519 key ID/);
  t.throws(() => generateSigningKey('rsa:1'), /invalid ed25519 key ID/);
});

t.test('verification is strict: a small-order public key verifies nothing', async (t) => {
  // The identity point as public key, with R = identity and S = 0, satisfies the cofactored
  // equation for every message. ZIP-215 (noble's default) accepts it; libsodium and we do not.
  const identity = new Uint8Array(32);
  identity[0] = 1;
  const forged = new Uint8Array(64);
  forged[0] = 1;
  const object = { one: 1, signatures: { domain: { [KEY_ID]: encodeBase64(forged) } } };
  const message = new TextEncoder().encode('{"one":1}');
  t.ok(ed.verify(forged, message, identity), 'the ZIP-215 default would accept the forgery');
  t.notOk(verifyJsonSignature(object, SERVER_NAME, KEY_ID, identity), 'we refuse it');
});

t.test('server names that match Object.prototype members find no signatures', async (t) => {
  const signed = signJson({ one: 1 }, SERVER_NAME, KEY_ID, SEED);
  t.same(signingKeyIds(signed, 'constructor'), []);
  t.same(signingKeyIds(signed, '__proto__'), []);
  t.same(signingKeyIds(signed, SERVER_NAME), [KEY_ID]);
  t.notOk(verifyJsonSignature(signed, 'constructor', KEY_ID, PUBLIC_KEY));
});
