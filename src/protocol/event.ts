import type { JsonObject } from './json.ts';

/**
 * A persistent data unit (room event) in the format of room versions 4 and later, which covers
 * the versions Conclave serves (10, 11, 12). In room version 12 the `m.room.create` event has no
 * `room_id`: the room ID is derived from the create event's reference hash.
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
  /** Top-level `redacts` of m.room.redaction in room version 10; under `content` from 11 on. */
  redacts?: string;
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
