import { CanonicalJsonError, canonicalJsonBytes } from '../protocol/canonical-json.ts';
import type { RoomEvent } from '../protocol/event.ts';
import { isValidEventId, isValidUserId } from '../protocol/identifiers.ts';
import { isJsonObject } from '../protocol/json.ts';
import type { RoomVersion } from '../protocol/room-versions.ts';

/** Largest event, as the spec limits PDUs: 65,536 bytes of canonical JSON. */
export const MAX_EVENT_BYTES = 65_536;
/** Limits on the fields of a PDU (server-server API: size limits; rooms: event format). */
export const MAX_ID_BYTES = 255;
export const MAX_PREV_EVENTS = 20;
export const MAX_AUTH_EVENTS = 10;

const utf8Length = (s: string) => Buffer.byteLength(s, 'utf8');

/**
 * The format and size checks an event must pass before anything else is done with it
 * (server-server API: checks performed on receipt of a PDU, step 1). Returns why it fails, or
 * undefined when it passes. `roomId` is the room the event claims to be in (for a v12 create
 * event, the ID derived from it).
 */
export function formatProblem(event: RoomEvent, roomId: string, rv: RoomVersion): string | undefined {
  if (typeof event.type !== 'string' || event.type.length === 0) return 'type must be a non-empty string';
  if (utf8Length(event.type) > MAX_ID_BYTES) return `type exceeds ${MAX_ID_BYTES} bytes`;
  if (event.state_key !== undefined) {
    if (typeof event.state_key !== 'string') return 'state_key must be a string';
    if (utf8Length(event.state_key) > MAX_ID_BYTES) return `state_key exceeds ${MAX_ID_BYTES} bytes`;
  }
  if (typeof event.sender !== 'string' || !isValidUserId(event.sender))
    return 'sender is not a valid user ID';
  if (utf8Length(event.sender) > MAX_ID_BYTES) return `sender exceeds ${MAX_ID_BYTES} bytes`;
  // Room versions 1 and 2: the sender's server chose the ID, `$opaque:server_name`; its server
  // name is the event's origin, whose signature the signature checks then require.
  if (
    rv.eventIdFormat === 'legacy' &&
    (typeof event.event_id !== 'string' || !isValidEventId(event.event_id, rv))
  )
    return 'event_id is not of the form $opaque:server_name';
  const isV12Create = event.type === 'm.room.create' && rv.roomIdFromCreateEvent;
  if (!isV12Create && event.room_id !== roomId) return 'room_id does not name this room';
  if (isV12Create && event.room_id !== undefined) return 'a v12 create event has no room_id';
  if (!isJsonObject(event.content)) return 'content must be an object';
  if (!Number.isSafeInteger(event.origin_server_ts)) return 'origin_server_ts must be an integer';
  if (!Number.isSafeInteger(event.depth) || event.depth < 0) return 'depth must be a non-negative integer';
  if (!isStringArray(event.prev_events)) return 'prev_events must be a list of event IDs';
  if (!isStringArray(event.auth_events)) return 'auth_events must be a list of event IDs';
  if (event.prev_events.length > MAX_PREV_EVENTS) return `more than ${MAX_PREV_EVENTS} prev_events`;
  if (event.auth_events.length > MAX_AUTH_EVENTS) return `more than ${MAX_AUTH_EVENTS} auth_events`;
  if (!isJsonObject(event.hashes) || typeof event.hashes.sha256 !== 'string')
    return 'hashes.sha256 is missing';
  if (!isJsonObject(event.signatures)) return 'signatures must be an object';
  try {
    const { event_id: _omit, ...pdu } = event;
    if (canonicalJsonBytes(pdu).length > MAX_EVENT_BYTES) return `event exceeds ${MAX_EVENT_BYTES} bytes`;
  } catch (err) {
    if (err instanceof CanonicalJsonError) return `not canonical JSON: ${err.message}`;
    throw err;
  }
  return undefined;
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}
