/**
 * Hashing and signing whole events (server-server-api: Signing Events).
 *
 * An event's signature covers its redacted form, so it stays checkable after a redaction; the
 * content hash, which the redacted form keeps, ties the signature to the full content. Both cover
 * the wire form of the room version (`toWirePdu`), so internal events may be passed as they are.
 */

import { encodeBase64 } from './base64.ts';
import { toWirePdu } from './event.ts';
import { computeContentHash } from './hashes.ts';
import { redactEvent } from './redaction.ts';
import type { RoomVersion } from './room-versions.ts';
import { type Signatures, signJson, verifyJsonSignature } from './signing.ts';

/**
 * Adds the content hash, then signs the redacted event and copies the signatures onto the full
 * event (server-server-api: Adding hashes and signatures to outgoing events). Returns a copy;
 * signatures already on the event from other servers are kept.
 */
export function hashAndSignEvent<E extends object>(
  event: E,
  roomVersion: RoomVersion,
  serverName: string,
  keyId: string,
  seed: Uint8Array,
): E & { hashes: { sha256: string }; signatures: Signatures } {
  const hashes = { sha256: encodeBase64(computeContentHash(event, roomVersion)) };
  const wire = { ...toWirePdu(event, roomVersion), hashes };
  const signed = signJson(redactEvent(wire, roomVersion), serverName, keyId, seed);
  return { ...event, hashes, signatures: signed.signatures };
}

/**
 * Adds our signature to an event another server built and hashed (an invite we are asked to
 * co-sign); its content hash and the other signatures are kept as they are.
 */
export function addEventSignature<E extends { signatures?: Signatures }>(
  event: E,
  roomVersion: RoomVersion,
  serverName: string,
  keyId: string,
  seed: Uint8Array,
): E & { signatures: Signatures } {
  const signed = signJson(redactEvent(toWirePdu(event, roomVersion), roomVersion), serverName, keyId, seed);
  return { ...event, signatures: signed.signatures };
}

/**
 * Checks `serverName`'s signature with key `keyId` on `event`, whether we hold the full event or
 * a redacted copy (server-server-api: Validating hashes and signatures on received events). The
 * content hash is a separate check: see `checkContentHash`.
 */
export function verifyEventSignature(
  event: object,
  roomVersion: RoomVersion,
  serverName: string,
  keyId: string,
  publicKey: Uint8Array,
): boolean {
  return verifyJsonSignature(
    redactEvent(toWirePdu(event, roomVersion), roomVersion),
    serverName,
    keyId,
    publicKey,
  );
}
