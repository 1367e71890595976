import { errors } from '../errors.ts';
import { decodeBase64 } from '../protocol/base64.ts';
import { canonicalJson } from '../protocol/canonical-json.ts';
import { isJsonObject, type JsonObject, type JsonValue } from '../protocol/json.ts';
import { decodeKey, verifyJsonSignature } from '../protocol/signing.ts';
import type { CrossSigningSignatureRow, CrossSigningUsage } from '../storage/database.ts';

/**
 * The checks a key must pass before Conclave publishes it, the same whether a local device
 * uploaded it or another server answered a query with it (spec/e2ee.md lists them). Each check
 * throws a MatrixError; callers serving remote answers catch it and drop the key.
 */

export function isKey32(text: string): boolean {
  try {
    return decodeBase64(text).length === 32;
  } catch {
    return false;
  }
}

/**
 * Whether `object` carries a valid signature by `signer`'s ed25519 key `keyId` with the given
 * public key. Key IDs of cross-signing keys hold base64 (`+`, `/`) and device IDs may hold other
 * printable characters, which the protocol core's key ID grammar (made for server keys) refuses;
 * the signature does not cover `signatures`, so it is checked under a neutral key ID instead.
 */
export function verifySignedBy(
  object: JsonObject,
  signer: string,
  keyId: string,
  publicKey: string,
): boolean {
  const bySigner = isJsonObject(object.signatures) ? object.signatures[signer] : undefined;
  const signature = isJsonObject(bySigner) ? bySigner[keyId] : undefined;
  if (typeof signature !== 'string' || !keyId.startsWith('ed25519:')) return false;
  let key: Uint8Array;
  try {
    key = decodeKey(publicKey);
  } catch {
    return false;
  }
  const probe = { ...object, signatures: { signer: { 'ed25519:k': signature } } };
  try {
    return verifyJsonSignature(probe, 'signer', 'ed25519:k', key);
  } catch {
    return false;
  }
}

export interface CheckedDeviceKeys {
  keys: JsonObject;
  ed25519: string;
  curve25519: string | null;
}

/**
 * Checks a DeviceKeys object of `userId`'s device `deviceId`: it names them, its keys are named
 * `<algorithm>:<device_id>` with string values, it has a 32-byte ed25519 key (and a 32-byte
 * curve25519 key if any), and it is signed by that ed25519 key. Returns what to store, without
 * `unsigned` (servers add their own).
 */
export function checkDeviceKeys(dk: JsonValue, userId: string, deviceId: string): CheckedDeviceKeys {
  if (!isJsonObject(dk)) throw errors.badJson('Device keys must be an object');
  if (dk.user_id !== userId || dk.device_id !== deviceId) {
    throw errors.forbidden('Device keys may only be uploaded by the device they belong to');
  }
  const keys = dk.keys;
  if (!isJsonObject(keys)) throw errors.badJson('device_keys.keys must be an object');
  for (const [name, value] of Object.entries(keys)) {
    const colon = name.indexOf(':');
    if (colon <= 0 || name.slice(colon + 1) !== deviceId) {
      throw errors.invalidParam(`Device key names must be <algorithm>:${deviceId}`);
    }
    if (typeof value !== 'string') throw errors.badJson('Device keys must be strings');
  }
  const ed25519 = keys[`ed25519:${deviceId}`];
  if (typeof ed25519 !== 'string' || !isKey32(ed25519)) {
    throw errors.invalidParam('Device keys must include the device ed25519 key (32 bytes, base64)');
  }
  const curve = keys[`curve25519:${deviceId}`];
  if (curve !== undefined && (typeof curve !== 'string' || !isKey32(curve))) {
    throw errors.invalidParam('The curve25519 key must be 32 bytes, base64');
  }
  if (!verifySignedBy(dk, userId, `ed25519:${deviceId}`, ed25519)) {
    throw errors.invalidSignature("Device keys must be signed by the device's own ed25519 key");
  }
  const { unsigned: _unsigned, ...kept } = dk;
  return { keys: kept, ed25519, curve25519: typeof curve === 'string' ? curve : null };
}

/** Checks a cross-signing key's shape for the user and usage; returns its public key. */
export function checkCrossSigningKey(
  key: JsonValue,
  userId: string,
  usage: CrossSigningUsage,
): { publicKey: string; key: JsonObject } {
  if (!isJsonObject(key)) throw errors.badJson(`The ${usage} key must be an object`);
  if (key.user_id !== userId) throw errors.forbidden(`The ${usage} key must belong to you`);
  const usages = key.usage;
  if (!Array.isArray(usages) || usages.length !== 1 || usages[0] !== usage) {
    throw errors.invalidParam(`The ${usage} key must have usage ["${usage}"]`);
  }
  const keys = key.keys;
  const entries = isJsonObject(keys) ? Object.entries(keys) : [];
  const [name, value] = entries[0] ?? [];
  if (entries.length !== 1 || typeof value !== 'string' || name !== `ed25519:${value}` || !isKey32(value)) {
    throw errors.invalidParam(
      `The ${usage} key must hold exactly one ed25519 key, named ed25519:<public key>`,
    );
  }
  const { unsigned: _unsigned, ...kept } = key;
  return { publicKey: value, key: kept };
}

/** A key without its signatures and unsigned data: what a signature covers. */
export function unsignedPart(object: JsonObject): JsonObject {
  const { signatures: _signatures, unsigned: _unsigned, ...rest } = object;
  return rest;
}

/**
 * A stored key with the uploaded signatures its viewer may see merged into `signatures`: the
 * owner's own, and the viewer's (their user-signing key on this master key). A null viewer (a
 * federation query) sees the owner's only.
 */
export function withSignatures(
  key: JsonObject,
  owner: string,
  targetKeyId: string,
  signatures: readonly CrossSigningSignatureRow[],
  viewer: string | null,
): JsonObject {
  const merged: Record<string, Record<string, JsonValue>> = {};
  if (isJsonObject(key.signatures)) {
    for (const [signer, bySigner] of Object.entries(key.signatures)) {
      if (isJsonObject(bySigner)) merged[signer] = { ...bySigner };
    }
  }
  for (const s of signatures) {
    if (s.target_user_id !== owner || s.target_key_id !== targetKeyId) continue;
    if (s.signer_user_id !== owner && s.signer_user_id !== viewer) continue;
    merged[s.signer_user_id] = { ...merged[s.signer_user_id], [s.signer_key_id]: s.signature };
  }
  return { ...key, signatures: merged };
}

export function sameJson(a: unknown, b: unknown): boolean {
  try {
    return canonicalJson(a) === canonicalJson(b);
  } catch {
    return JSON.stringify(a) === JSON.stringify(b);
  }
}
