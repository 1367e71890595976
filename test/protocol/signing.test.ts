import { randomBytes } from 'node:crypto';
import * as ed from '@noble/ed25519';
import { sha512 } from '@noble/hashes/sha2.js';
import t from 'tap';
import { decodeBase64, encodeBase64 } from '../../src/protocol/base64.ts';
import {
  decodeKey,
  ed25519Sign,
  ed25519Verify,
  encodeKey,
  generateSigningKey,
  isValidKeyId,
  publicKeyFromSeed,
  signingKeyFromSeed,
  signingKeyIds,
  signJson,
  verifyJsonSignature,
} from '../../src/protocol/signing.ts';

// The pure-JS implementation serves as the oracle node:crypto is compared with.
ed.hashes.sha512 = sha512;

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

t.test('node:crypto and @noble/ed25519 agree on random keys, messages and signatures', async (t) => {
  let accepted = 0;
  let refused = 0;
  for (let i = 0; i < 300; i++) {
    const seed = new Uint8Array(randomBytes(32));
    const message = new Uint8Array(randomBytes(i % 97));
    const publicKey = publicKeyFromSeed(seed);
    t.same(publicKey, ed.getPublicKey(seed), 'same public key');
    const signature = ed25519Sign(message, seed);
    t.same(signature, ed.sign(message, seed), 'same (deterministic) signature');
    // The genuine signature, then one with a random byte changed, then random bytes: each checked
    // by both implementations, under the genuine key and under a random 32-byte string.
    const tampered = signature.slice();
    tampered[i % 64]! ^= 1 + (i % 255);
    const cases: Array<[Uint8Array, Uint8Array]> = [
      [signature, publicKey],
      [tampered, publicKey],
      [new Uint8Array(randomBytes(64)), publicKey],
      [signature, new Uint8Array(randomBytes(32))],
    ];
    for (const [sig, key] of cases) {
      const ours = ed25519Verify(sig, message, key);
      let theirs: boolean;
      try {
        theirs = ed.verify(sig, message, key, { zip215: false });
      } catch {
        theirs = false;
      }
      if (ours !== theirs) t.fail(`disagree on case ${i}`, { ours, theirs });
      if (ours) accepted++;
      else refused++;
    }
  }
  t.equal(accepted, 300, 'every genuine signature verifies, nothing else does');
  t.equal(refused, 900);
});

t.test('strict verification: S at or above the group order, non-canonical public keys', async (t) => {
  const message = new TextEncoder().encode('m');
  const signature = ed25519Sign(message, SEED);
  // S + L is the same scalar modulo L: the cofactorless equation still holds, but RFC 8032
  // requires S < L.
  const L = (1n << 252n) + 27742317777372353535851937790883648493n;
  let s = 0n;
  for (let i = 31; i >= 0; i--) s = (s << 8n) | BigInt(signature[32 + i]!);
  let big = s + L;
  const malleable = signature.slice();
  for (let i = 0; i < 32; i++) {
    malleable[32 + i] = Number(big & 0xffn);
    big >>= 8n;
  }
  t.notOk(ed25519Verify(malleable, message, PUBLIC_KEY), 'S + L refused');
  t.ok(ed25519Verify(signature, message, PUBLIC_KEY), 'the genuine one verifies');
  // y = p (2^255 - 19) encodes y = 0 non-canonically.
  const nonCanonical = new Uint8Array(32).fill(0xff);
  nonCanonical[0] = 0xed;
  nonCanonical[31] = 0x7f;
  t.notOk(ed25519Verify(signature, message, nonCanonical), 'non-canonical public key refused');
  t.notOk(ed25519Verify(signature.subarray(1), message, PUBLIC_KEY), 'short signature');
});

t.test('node:crypto verifies several times faster than @noble/ed25519', async (t) => {
  const message = new Uint8Array(randomBytes(200));
  const signature = ed25519Sign(message, SEED);
  const time = (f: () => void, n: number) => {
    const start = performance.now();
    for (let i = 0; i < n; i++) f();
    return (performance.now() - start) / n;
  };
  const noble = time(() => ed.verify(signature, message, PUBLIC_KEY, { zip215: false }), 50);
  const node = time(() => ed25519Verify(signature, message, PUBLIC_KEY), 500);
  t.comment(
    `verify: @noble/ed25519 ${(noble * 1000).toFixed(0)} µs, node:crypto ${(node * 1000).toFixed(0)} µs`,
  );
  // A loose bound, so a busy machine cannot fail it: measured about tenfold.
  t.ok(node * 3 < noble, 'at least three times faster');
});
