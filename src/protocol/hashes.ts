/**
 * Content hashes, reference hashes, event IDs and (room version 12) room IDs
 * (server-server-api: Calculating the content hash / the reference hash for an event;
 * rooms: v4-event-ids fragment; appendices: Room IDs).
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { Base64Error, decodeBase64, encodeBase64, encodeBase64Url } from './base64.ts';
import { canonicalJsonBytes } from './canonical-json.ts';
import { isJsonObject } from './json.ts';
import { redactEvent } from './redaction.ts';
import { ROOM_VERSIONS, type RoomVersion } from './room-versions.ts';

/**
 * SHA-256 over the canonical JSON of the whole, unredacted event without `unsigned`,
 * `signatures` and `hashes`. It lets a receiver tell a complete event from a redacted copy.
 */
export function computeContentHash(event: object): Uint8Array {
  return sha256(canonicalJsonBytes(omit(event, ['unsigned', 'signatures', 'hashes'])));
}

/** Returns a copy of `event` with `hashes.sha256` set to its content hash (unpadded base64). */
export function addContentHash<E extends object>(event: E): E & { hashes: { sha256: string } } {
  return { ...event, hashes: { sha256: encodeBase64(computeContentHash(event)) } };
}

/**
 * True if `hashes.sha256` is present, decodes, and equals the recomputed content hash. A false
 * result on an otherwise valid event means we hold (or were sent) only a redacted copy.
 */
export function checkContentHash(event: object): boolean {
  const hashes = (event as { hashes?: unknown }).hashes;
  if (!isJsonObject(hashes) || typeof hashes.sha256 !== 'string') return false;
  let claimed: Uint8Array;
  try {
    claimed = decodeBase64(hashes.sha256);
  } catch (error) {
    if (error instanceof Base64Error) return false;
    throw error;
  }
  return bytesEqual(claimed, computeContentHash(event));
}

/**
 * SHA-256 over the canonical JSON of the event redacted for `roomVersion`, without `signatures`
 * and `unsigned`. Because it covers `hashes`, it commits to the full content too.
 */
export function computeReferenceHash(event: object, roomVersion: RoomVersion): Uint8Array {
  const redacted = redactEvent(event, roomVersion);
  return sha256(canonicalJsonBytes(omit(redacted, ['signatures', 'unsigned'])));
}

/** The event ID of room versions 4 and later: `$` + URL-safe unpadded base64 of the reference hash. */
export function computeEventId(event: object, roomVersion: RoomVersion): string {
  return `$${encodeBase64Url(computeReferenceHash(event, roomVersion))}`;
}

/**
 * Room version 12: the room ID is the create event's event ID with `!` in place of `$`.
 * Throws if the event is not an `m.room.create` or the room version derives IDs otherwise.
 */
export function roomIdFromCreateEvent(
  createEvent: object,
  roomVersion: RoomVersion = ROOM_VERSIONS['12'],
): string {
  if (!roomVersion.roomIdFromCreateEvent) {
    throw new Error(`room version ${roomVersion.id} does not derive room IDs from the create event`);
  }
  if ((createEvent as { type?: unknown }).type !== 'm.room.create') {
    throw new Error('room IDs are derived from m.room.create events only');
  }
  return `!${computeEventId(createEvent, roomVersion).slice(1)}`;
}

function omit(event: object, keys: readonly string[]): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...event };
  for (const key of keys) delete copy[key];
  return copy;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
