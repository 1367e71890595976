/**
 * Signing and verifying JSON with ed25519 (appendices: Signing JSON > Signing Details, Checking
 * for a Signature). Server keys are 32-byte ed25519 seeds; the spec's `ed25519` algorithm is the
 * NaCl one, which is plain RFC 8032 Ed25519.
 *
 * The arithmetic is node:crypto's (OpenSSL), about ten times faster than the pure-JS
 * @noble/ed25519 this module used before: a request carrying hundreds of signed keys must not
 * hold the event loop. OpenSSL alone accepts small-order public keys and non-canonical public key
 * encodings, which the strict verification below refuses (as libsodium does); those two checks
 * use noble's point decoding, once per public key (cached).
 *
 * This module only signs and checks; finding a server's public keys is the job of the federation
 * key fetcher, which hands them in. node:crypto is computation, not I/O: the core stays pure.
 */
import { createPrivateKey, createPublicKey, type KeyObject, randomBytes, sign, verify } from 'node:crypto';
import { Point } from '@noble/ed25519';
import { decodeBase64, encodeBase64 } from './base64.ts';
import { canonicalJsonBytes } from './canonical-json.ts';
import { isJsonObject } from './json.ts';

export const ED25519_SEED_LENGTH = 32;
export const ED25519_PUBLIC_KEY_LENGTH = 32;
export const ED25519_SIGNATURE_LENGTH = 64;

/** `signatures` of a signed object: entity (server name) -> key ID -> unpadded base64 signature. */
export type Signatures = Record<string, Record<string, string>>;

export interface SigningKey {
  /** `ed25519:` followed by the key version, e.g. `ed25519:a_XyZ1`. */
  keyId: string;
  /** The 32-byte secret seed. */
  seed: Uint8Array;
  publicKey: Uint8Array;
}

/**
 * Key IDs are `algorithm:version`, and the version may use only `[a-zA-Z0-9_]`
 * (server-server-api: keys definition). `ed25519` is the only algorithm Matrix defines.
 */
const ED25519_KEY_ID = /^ed25519:[a-zA-Z0-9_]+$/;

export function isValidKeyId(keyId: string): boolean {
  return ED25519_KEY_ID.test(keyId);
}

/** A new key with a random seed from the platform's CSPRNG. */
export function generateSigningKey(keyId: string): SigningKey {
  return signingKeyFromSeed(keyId, new Uint8Array(randomBytes(ED25519_SEED_LENGTH)));
}

export function signingKeyFromSeed(keyId: string, seed: Uint8Array): SigningKey {
  assertKeyId(keyId);
  return { keyId, seed, publicKey: publicKeyFromSeed(seed) };
}

export function publicKeyFromSeed(seed: Uint8Array): Uint8Array {
  assertLength(seed, ED25519_SEED_LENGTH, 'seed');
  const spki = createPublicKey(privateKeyOf(seed)).export({ format: 'der', type: 'spki' });
  return new Uint8Array(spki.subarray(spki.length - ED25519_PUBLIC_KEY_LENGTH));
}

/** Ed25519 signature of `message` with the key whose 32-byte seed is given (RFC 8032, deterministic). */
export function ed25519Sign(message: Uint8Array, seed: Uint8Array): Uint8Array {
  assertLength(seed, ED25519_SEED_LENGTH, 'seed');
  return new Uint8Array(sign(null, message, privateKeyOf(seed)));
}

/**
 * Strict RFC 8032 verification: false for a signature that is not 64 bytes, a scalar S not below
 * the group order, a public key that is not the canonical encoding of a point or is of small
 * order, or a signature that does not match. Never throws.
 */
export function ed25519Verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  if (signature.length !== ED25519_SIGNATURE_LENGTH || publicKey.length !== ED25519_PUBLIC_KEY_LENGTH) {
    return false;
  }
  if (!scalarIsReduced(signature.subarray(32))) return false;
  const key = acceptedPublicKey(publicKey);
  if (key === undefined) return false;
  try {
    return verify(null, message, key, signature);
  } catch {
    return false;
  }
}

/** Keys (seeds and public keys) travel as unpadded standard base64. */
export function encodeKey(key: Uint8Array): string {
  return encodeBase64(key);
}

/** Decodes a base64 seed or public key, padded or not; throws unless it is exactly 32 bytes. */
export function decodeKey(text: string): Uint8Array {
  const key = decodeBase64(text);
  assertLength(key, ED25519_PUBLIC_KEY_LENGTH, 'key');
  return key;
}

/**
 * Returns a copy of `object` with a signature by `serverName`'s key `keyId` added to
 * `signatures` (existing signatures are kept). The signature covers the canonical JSON of the
 * object without `signatures` and `unsigned`, as the spec's signing algorithm lays out.
 */
export function signJson<T extends object>(
  object: T,
  serverName: string,
  keyId: string,
  seed: Uint8Array,
): T & { signatures: Signatures } {
  assertKeyId(keyId);
  assertLength(seed, ED25519_SEED_LENGTH, 'seed');
  const signature = encodeBase64(ed25519Sign(signedBytes(object), seed));
  const signatures = copySignatures((object as { signatures?: unknown }).signatures);
  signatures[serverName] = { ...signatures[serverName], [keyId]: signature };
  return { ...object, signatures };
}

/**
 * Checks that `object` carries a valid signature by `serverName`'s key `keyId` (appendices:
 * Checking for a Signature). Returns false, never throws, when the signature is missing, is not
 * base64 of 64 bytes, the key ID is not ed25519, the object is not canonical JSON, or the
 * signature does not match. Verification is strict RFC 8032 (as libsodium, which Synapse uses,
 * and Go's crypto/ed25519): non-canonical encodings and small-order public keys are refused.
 */
export function verifyJsonSignature(
  object: object,
  serverName: string,
  keyId: string,
  publicKey: Uint8Array,
): boolean {
  if (!isValidKeyId(keyId) || publicKey.length !== ED25519_PUBLIC_KEY_LENGTH) return false;
  const encoded = signatureOf(object, serverName, keyId);
  if (encoded === undefined) return false;
  try {
    const signature = decodeBase64(encoded);
    if (signature.length !== ED25519_SIGNATURE_LENGTH) return false;
    return ed25519Verify(signature, signedBytes(object), publicKey);
  } catch {
    // Undecodable base64 or a value outside canonical JSON: neither can carry a valid signature.
    return false;
  }
}

/** The key IDs `serverName` signed `object` with, in the order they appear. */
export function signingKeyIds(object: object, serverName: string): string[] {
  const bySigner = ownValue(ownValue(object, 'signatures'), serverName);
  return isJsonObject(bySigner) ? Object.keys(bySigner) : [];
}

/** The bytes a signature covers: canonical JSON without `signatures` and `unsigned`. */
function signedBytes(object: object): Uint8Array {
  const { signatures: _signatures, unsigned: _unsigned, ...covered } = object as Record<string, unknown>;
  return canonicalJsonBytes(covered);
}

function signatureOf(object: object, serverName: string, keyId: string): string | undefined {
  const signature = ownValue(ownValue(ownValue(object, 'signatures'), serverName), keyId);
  return typeof signature === 'string' ? signature : undefined;
}

/** `object[key]` if `object` is a JSON object with that own key (never an Object.prototype member). */
function ownValue(object: unknown, key: string): unknown {
  return isJsonObject(object) && Object.hasOwn(object, key) ? object[key] : undefined;
}

/** A copy two levels deep, so adding our signature never writes into the caller's object. */
function copySignatures(signatures: unknown): Signatures {
  const copy: Signatures = {};
  if (!isJsonObject(signatures)) return copy;
  for (const [signer, byKey] of Object.entries(signatures)) {
    if (!isJsonObject(byKey)) continue;
    const kept: Record<string, string> = {};
    for (const [keyId, value] of Object.entries(byKey)) {
      if (typeof value === 'string') kept[keyId] = value;
    }
    copy[signer] = kept;
  }
  return copy;
}

// ---------------------------------------------------------------------------------------------
// node:crypto key objects

/** DER prefixes that wrap a raw 32-byte Ed25519 seed (PKCS #8) or public key (SPKI), RFC 8410. */
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** Order of the Ed25519 base point, little-endian (RFC 8032 section 5.1: L = 2^252 + 27742...). */
const GROUP_ORDER_LE = Buffer.from('edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010', 'hex');

/** Bounded caches: a server checks the same few keys again and again. */
const CACHE_LIMIT = 10_000;
const privateKeys = new Map<string, KeyObject>();
/** Public key (base64) -> its key object, or null when strict verification refuses the key. */
const publicKeys = new Map<string, KeyObject | null>();

function remember<V>(cache: Map<string, V>, key: string, value: V): V {
  if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value as string);
  cache.set(key, value);
  return value;
}

function privateKeyOf(seed: Uint8Array): KeyObject {
  const id = encodeBase64(seed);
  const cached = privateKeys.get(id);
  if (cached) return cached;
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  return remember(privateKeys, id, key);
}

/** The key object for a public key, or undefined when it is non-canonical or of small order. */
function acceptedPublicKey(publicKey: Uint8Array): KeyObject | undefined {
  const id = encodeBase64(publicKey);
  const cached = publicKeys.get(id);
  if (cached !== undefined) return cached ?? undefined;
  let key: KeyObject | null = null;
  try {
    // fromBytes without ZIP-215 refuses y >= p and the negative zero; OpenSSL would reduce them.
    if (!Point.fromBytes(publicKey, false).isSmallOrder()) {
      key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
    }
  } catch {
    key = null;
  }
  return remember(publicKeys, id, key) ?? undefined;
}

/** Whether a 32-byte little-endian scalar is below the group order (RFC 8032 5.1.7 step 1). */
function scalarIsReduced(scalar: Uint8Array): boolean {
  for (let i = 31; i >= 0; i--) {
    if (scalar[i]! < GROUP_ORDER_LE[i]!) return true;
    if (scalar[i]! > GROUP_ORDER_LE[i]!) return false;
  }
  return false;
}

function assertKeyId(keyId: string): void {
  if (!isValidKeyId(keyId)) throw new Error(`invalid ed25519 key ID: ${JSON.stringify(keyId)}`);
}

function assertLength(bytes: Uint8Array, length: number, what: string): void {
  if (bytes.length !== length)
    throw new Error(`ed25519 ${what} must be ${length} bytes, got ${bytes.length}`);
}
