import type { Pdu, RoomEvent } from '../protocol/event.ts';
import { computeEventId } from '../protocol/hashes.ts';
import { isJsonObject, type JsonObject } from '../protocol/json.ts';
import type { RoomVersion } from '../protocol/room-versions.ts';

/**
 * PDUs on the wire. In the room versions served (event IDs from reference hashes), a PDU carries
 * no event ID: the receiver computes it. Our own `unsigned` data never leaves the server.
 */
export function toWire(event: RoomEvent): JsonObject {
  const { event_id: _id, unsigned: _unsigned, ...pdu } = event;
  return pdu as unknown as JsonObject;
}

/** A received PDU with its computed event ID, or why it cannot be one. */
export function fromWire(json: unknown, rv: RoomVersion): RoomEvent | { error: string } {
  if (!isJsonObject(json)) return { error: 'a PDU must be an object' };
  if (typeof json.type !== 'string' || typeof json.sender !== 'string')
    return { error: 'a PDU needs type and sender' };
  const { unsigned: _unsigned, event_id: _claimed, ...pdu } = json;
  try {
    return { ...(pdu as unknown as Pdu), event_id: computeEventId(pdu, rv) };
  } catch (err) {
    return { error: `cannot compute the event ID: ${(err as Error).message}` };
  }
}

export function isWireError(value: RoomEvent | { error: string }): value is { error: string } {
  return 'error' in value && !('event_id' in value);
}
