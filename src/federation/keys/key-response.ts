/**
 * Checking a server's key response (GET /_matrix/key/v2/server, or one entry of a notary's
 * `server_keys`): the shape of the Server Keys object, its self-signature, and the validity the
 * spec lets us grant it. Pure: the caller supplies the clock.
 */

import type { JsonObject } from '../../protocol/json.ts';
import { isJsonObject } from '../../protocol/json.ts';
import { decodeKey, isValidKeyId, verifyJsonSignature } from '../../protocol/signing.ts';

/** valid_until_ts is honoured up to 7 days after we learn a key (keys_server: valid_until_ts). */
export const MAX_KEY_VALIDITY_MS = 7 * 24 * 60 * 60 * 1000;

export interface CheckedKey {
  keyId: string;
  /** Unpadded base64, as published. */
  key: string;
  /** For current keys: valid_until_ts capped at fetch time + 7 days. Null for old keys. */
  validUntilTs: number | null;
  /** For old keys: when the server stopped using the key. */
  expiredTs: number | null;
}

export type CheckedResponse =
  | { ok: true; keys: CheckedKey[]; validUntilTs: number; response: JsonObject }
  | { ok: false; reason: string };

function isTimestamp(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Checks a key response claimed to come from `serverName`, received at `now`. */
export function checkKeyResponse(response: unknown, serverName: string, now: number): CheckedResponse {
  if (!isJsonObject(response)) return { ok: false, reason: 'the key response is not a JSON object' };
  if (response.server_name !== serverName) {
    return {
      ok: false,
      reason: `the key response is for ${JSON.stringify(response.server_name)}, not ${serverName}`,
    };
  }
  if (!isTimestamp(response.valid_until_ts))
    return { ok: false, reason: 'valid_until_ts is missing or invalid' };
  if (!isJsonObject(response.verify_keys)) return { ok: false, reason: 'verify_keys is missing' };
  const validUntilTs = Math.min(response.valid_until_ts, now + MAX_KEY_VALIDITY_MS);
  const keys: CheckedKey[] = [];
  const current = new Map<string, Uint8Array>();
  for (const [keyId, entry] of Object.entries(response.verify_keys)) {
    if (!isValidKeyId(keyId)) continue; // an algorithm we do not know: not ours to judge
    const decoded = decodePublic(entry);
    if (!decoded) return { ok: false, reason: `verify_keys.${keyId} is not an ed25519 public key` };
    current.set(keyId, decoded.bytes);
    keys.push({ keyId, key: decoded.text, validUntilTs, expiredTs: null });
  }
  if (response.old_verify_keys !== undefined) {
    if (!isJsonObject(response.old_verify_keys))
      return { ok: false, reason: 'old_verify_keys is not an object' };
    for (const [keyId, entry] of Object.entries(response.old_verify_keys)) {
      if (!isValidKeyId(keyId) || current.has(keyId)) continue;
      const decoded = decodePublic(entry);
      const expired = isJsonObject(entry) ? entry.expired_ts : undefined;
      if (!decoded || !isTimestamp(expired)) {
        return { ok: false, reason: `old_verify_keys.${keyId} needs a key and an expired_ts` };
      }
      keys.push({ keyId, key: decoded.text, validUntilTs: null, expiredTs: expired });
    }
  }
  // The response must be signed by the server itself, with a key it lists as current; every such
  // signature it carries must hold.
  const signatures = isJsonObject(response.signatures) ? response.signatures[serverName] : undefined;
  const signedWith = isJsonObject(signatures) ? Object.keys(signatures).filter((id) => current.has(id)) : [];
  if (signedWith.length === 0) {
    return {
      ok: false,
      reason: `the key response is not signed by ${serverName} with one of its verify_keys`,
    };
  }
  for (const keyId of signedWith) {
    if (!verifyJsonSignature(response, serverName, keyId, current.get(keyId)!)) {
      return { ok: false, reason: `the key response's signature by ${keyId} does not verify` };
    }
  }
  return { ok: true, keys, validUntilTs: response.valid_until_ts, response };
}

function decodePublic(entry: unknown): { text: string; bytes: Uint8Array } | null {
  if (!isJsonObject(entry) || typeof entry.key !== 'string') return null;
  try {
    return { text: entry.key, bytes: decodeKey(entry.key) };
  } catch {
    return null;
  }
}
