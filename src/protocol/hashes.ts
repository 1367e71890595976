/**
 * Content hashes, reference hashes, event IDs and (room version 12) room IDs
 * (server-server-api: Calculating the content hash / the reference hash for an event;
 * rooms: v1-event-ids fragment, v3.md "Event IDs", v4-event-ids fragment; appendices: Room IDs).
 *
 * Hashes cover the wire format of the room version (see `toWirePdu`): pass a room version and an
 * internal `RoomEvent` is converted first (its `event_id` dropped from v3 on, its references
 * paired with their hashes in v1 and v2).
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { Base64Error, decodeBase64, encodeBase64, encodeBase64Url } from './base64.ts';
import { canonicalJsonBytes } from './canonical-json.ts';
import { toWirePdu } from './event.ts';
import { isJsonObject } from './json.ts';
import { redactEvent } from './redaction.ts';
import { ROOM_VERSIONS, type RoomVersion } from './room-versions.ts';

/**
 * SHA-256 over the canonical JSON of the whole, unredacted event without `unsigned`,
 * `signatures` and `hashes`. It lets a receiver tell a complete event from a redacted copy.
 */
export function computeContentHash(event: object, roomVersion?: RoomVersion): Uint8Array {
  const wire = roomVersion ? toWirePdu(event, roomVersion) : event;
  return sha256(canonicalJsonBytes(omit(wire, ['unsigned', 'signatures', 'hashes'])));
}

/** Returns a copy of `event` with `hashes.sha256` set to its content hash (unpadded base64). */
export function addContentHash<E extends object>(
  event: E,
  roomVersion?: RoomVersion,
): E & { hashes: { sha256: string } } {
  return { ...event, hashes: { sha256: encodeBase64(computeContentHash(event, roomVersion)) } };
}

/**
 * True if `hashes.sha256` is present, decodes, and equals the recomputed content hash. A false
 * result on an otherwise valid event means we hold (or were sent) only a redacted copy.
 */
export function checkContentHash(event: object, roomVersion?: RoomVersion): boolean {
  const hashes = (event as { hashes?: unknown }).hashes;
  if (!isJsonObject(hashes) || typeof hashes.sha256 !== 'string') return false;
  let claimed: Uint8Array;
  try {
    claimed = decodeBase64(hashes.sha256);
  } catch (error) {
    if (error instanceof Base64Error) return false;
    throw error;
  }
  return bytesEqual(claimed, computeContentHash(event, roomVersion));
}

/**
 * SHA-256 over the canonical JSON of the event's wire form redacted for `roomVersion`, without
 * `signatures` and `unsigned`. Because it covers `hashes`, it commits to the full content too.
 */
export function computeReferenceHash(event: object, roomVersion: RoomVersion): Uint8Array {
  const redacted = redactEvent(toWirePdu(event, roomVersion), roomVersion);
  return sha256(canonicalJsonBytes(omit(redacted, ['signatures', 'unsigned'])));
}

/**
 * The hashes another event of a v1/v2 room pairs with this event's ID in its `prev_events` and
 * `auth_events`: the reference hash in unpadded standard base64.
 */
export function referenceHashes(event: object, roomVersion: RoomVersion): { sha256: string } {
  return { sha256: encodeBase64(computeReferenceHash(event, roomVersion)) };
}

/**
 * The event's ID. v4+: `$` + URL-safe unpadded base64 of the reference hash; v3: the same in
 * standard unpadded base64; v1 and v2: the `$opaque:server` ID the sending server chose, carried
 * in the event (throws if there is none).
 */
export function computeEventId(event: object, roomVersion: RoomVersion): string {
  if (roomVersion.eventIdFormat === 'legacy') {
    const carried = (event as { event_id?: unknown }).event_id;
    if (typeof carried !== 'string') {
      throw new Error(
        `room version ${roomVersion.id} event IDs are chosen by the sender and carried in the event`,
      );
    }
    return carried;
  }
  const hash = computeReferenceHash(event, roomVersion);
  return `$${roomVersion.eventIdFormat === 'base64' ? encodeBase64(hash) : encodeBase64Url(hash)}`;
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
