/**
 * Signing and verifying JSON with ed25519 (appendices: Signing JSON > Signing Details, Checking
 * for a Signature). Server keys are 32-byte ed25519 seeds; the spec's `ed25519` algorithm is the
 * NaCl one, which is plain RFC 8032 Ed25519.
 *
 * This module only signs and checks; finding a server's public keys is the job of the federation
 * key fetcher, which hands them in.
 */
import * as ed from '@noble/ed25519';
import { sha512 } from '@noble/hashes/sha2.js';
import { decodeBase64, encodeBase64 } from './base64.ts';
import { canonicalJsonBytes } from './canonical-json.ts';
import { isJsonObject } from './json.ts';

// @noble/ed25519 v3 only offers its synchronous API once a synchronous SHA-512 is wired in.
// Synchronous signing matters: a server signs and checks events in tight loops.
ed.hashes.sha512 = sha512;

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
  return signingKeyFromSeed(keyId, ed.utils.randomSecretKey());
}

export function signingKeyFromSeed(keyId: string, seed: Uint8Array): SigningKey {
  assertKeyId(keyId);
  return { keyId, seed, publicKey: publicKeyFromSeed(seed) };
}

export function publicKeyFromSeed(seed: Uint8Array): Uint8Array {
  assertLength(seed, ED25519_SEED_LENGTH, 'seed');
  return ed.getPublicKey(seed);
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
  const signature = encodeBase64(ed.sign(signedBytes(object), seed));
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
    return ed.verify(signature, signedBytes(object), publicKey, { zip215: false });
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

function assertKeyId(keyId: string): void {
  if (!isValidKeyId(keyId)) throw new Error(`invalid ed25519 key ID: ${JSON.stringify(keyId)}`);
}

function assertLength(bytes: Uint8Array, length: number, what: string): void {
  if (bytes.length !== length)
    throw new Error(`ed25519 ${what} must be ${length} bytes, got ${bytes.length}`);
}
