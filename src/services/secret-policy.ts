import type { JsonObject } from '../protocol/json.ts';

/**
 * Keys and secrets reach the server only encrypted (stricter than the spec, which asks clients
 * to encrypt them but lets the server store whatever comes).
 *
 * - Secret storage (client-server API: Secret Storage) keeps the cross-signing private keys and
 *   the key backup's private key in the user's account data, each encrypted with a secret
 *   storage key the server never sees: `{"encrypted": {<key id>: {iv, ciphertext, mac}}}`.
 * - Room keys, forwarded room keys and shared secrets travel between devices only inside an
 *   Olm-encrypted to-device message (`m.room.encrypted`), never as a to-device event of their own
 *   type.
 */
export const SECRET_ACCOUNT_DATA_TYPES: ReadonlySet<string> = new Set([
  'm.cross_signing.master',
  'm.cross_signing.self_signing',
  'm.cross_signing.user_signing',
  'm.megolm_backup.v1',
]);

export const ENCRYPTED_ONLY_TO_DEVICE_TYPES: ReadonlySet<string> = new Set([
  'm.room_key',
  'm.forwarded_room_key',
  'm.secret.send',
]);

/** Whether account data content is a secret encrypted for secret storage (and nothing else). */
export function isEncryptedSecret(content: JsonObject): boolean {
  const keys = Object.keys(content);
  if (keys.length !== 1 || keys[0] !== 'encrypted') return false;
  const encrypted = content.encrypted;
  if (typeof encrypted !== 'object' || encrypted === null || Array.isArray(encrypted)) return false;
  const entries = Object.values(encrypted);
  return (
    entries.length > 0 &&
    entries.every(
      (e) =>
        typeof e === 'object' &&
        e !== null &&
        !Array.isArray(e) &&
        typeof (e as JsonObject).ciphertext === 'string' &&
        typeof (e as JsonObject).iv === 'string' &&
        typeof (e as JsonObject).mac === 'string',
    )
  );
}
