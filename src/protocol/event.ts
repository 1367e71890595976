import { isJsonObject, type JsonObject, type JsonValue } from './json.ts';
import type { RoomVersion } from './room-versions.ts';

/**
 * A persistent data unit (room event) as Conclave holds it in every room version: `prev_events`
 * and `auth_events` are lists of event IDs, the format of room versions 3 and later. Room versions
 * 1 and 2 pair each ID with the referenced event's hashes on the wire; see `toWirePdu` and
 * `fromWirePdu` (pdu-wire.ts). In room version 12 the `m.room.create` event has no `room_id`: the
 * room ID is derived from the create event's reference hash.
 *
 * Keys a remote server put in an event that this interface does not name (such as `origin`) are
 * kept as they are: hashes and signatures cover them.
 */
export interface Pdu {
  type: string;
  room_id?: string;
  sender: string;
  state_key?: string;
  content: JsonObject;
  origin_server_ts: number;
  depth: number;
  prev_events: string[];
  auth_events: string[];
  hashes: { sha256: string };
  signatures: Record<string, Record<string, string>>;
  unsigned?: JsonObject;
  /** Top-level `redacts` of m.room.redaction before room version 11; under `content` from 11 on. */
  redacts?: string;
  /**
   * Room versions 1 and 2 only, never on the wire: the hashes the wire format pairs with each ID
   * of `prev_events` and `auth_events` (`[id, {sha256: ...}]`), keyed by event ID.
   */
  reference_hashes?: Record<string, Record<string, string>>;
}

/** A PDU together with the event ID computed from its reference hash. */
export interface RoomEvent extends Pdu {
  event_id: string;
}

/** Key of a state entry: the event type and state key joined by a NUL character. */
export type StateTuple = `${string}\u0000${string}`;

export function stateTuple(type: string, stateKey: string): StateTuple {
  return `${type}\u0000${stateKey}`;
}

/** The state of a room at some point: one event per (type, state_key). */
export type StateMap<E = RoomEvent> = Map<StateTuple, E>;

export function isStateEvent(event: Pick<Pdu, 'state_key'>): boolean {
  return typeof event.state_key === 'string';
}

/** An event that cannot be put into, or read from, the wire format of its room version. */
export class WireFormatError extends Error {
  override name = 'WireFormatError';
}

/**
 * The event as it travels over federation in `roomVersion` (and as hashes and signatures cover
 * it): from room version 3 on without `event_id`; in room versions 1 and 2 with `event_id` and
 * with `prev_events` and `auth_events` as `[id, hashes]` pairs taken from `reference_hashes`.
 * Returns a copy; throws WireFormatError if a v1/v2 event lacks its ID or a reference's hashes.
 */
export function toWirePdu(event: object, roomVersion: RoomVersion): JsonObject {
  const { reference_hashes: hashes, ...wire } = event as Record<string, JsonValue | undefined> & {
    reference_hashes?: unknown;
  };
  if (!roomVersion.legacyEventFormat) {
    delete wire.event_id;
    return wire as JsonObject;
  }
  if (typeof wire.event_id !== 'string') {
    throw new WireFormatError(`room version ${roomVersion.id} events carry their event_id`);
  }
  for (const key of ['prev_events', 'auth_events'] as const) {
    const refs = wire[key];
    if (!Array.isArray(refs)) continue;
    wire[key] = refs.map((ref) => {
      if (typeof ref !== 'string') return ref; // already a pair
      const hash = isJsonObject(hashes) ? hashes[ref] : undefined;
      if (!isJsonObject(hash)) throw new WireFormatError(`no reference hash for ${ref} in ${key}`);
      return [ref, hash];
    });
  }
  return wire as JsonObject;
}
