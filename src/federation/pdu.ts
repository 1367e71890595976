import type { Pdu, RoomEvent } from '../protocol/event.ts';
import { computeEventId } from '../protocol/hashes.ts';
import { isJsonObject, type JsonObject } from '../protocol/json.ts';
import { fromWirePdu, toWirePdu } from '../protocol/pdu-wire.ts';
import type { RoomVersion } from '../protocol/room-versions.ts';

/**
 * PDUs on the wire. From room version 3 a PDU carries no event ID (the receiver computes it); in
 * versions 1 and 2 it carries the sender-chosen ID and references events as [id, hashes] pairs
 * (protocol/pdu-wire.ts does the conversion). Our own `unsigned` data never leaves the server.
 */
export function toWire(event: RoomEvent, rv: RoomVersion): JsonObject {
  const { unsigned: _unsigned, ...pdu } = event;
  return toWirePdu(pdu, rv);
}

/** A received PDU with its event ID (computed, or in v1/v2 carried), or why it cannot be one. */
export function fromWire(json: unknown, rv: RoomVersion): RoomEvent | { error: string } {
  if (!isJsonObject(json)) return { error: 'a PDU must be an object' };
  if (typeof json.type !== 'string' || typeof json.sender !== 'string')
    return { error: 'a PDU needs type and sender' };
  const { unsigned: _unsigned, event_id: claimed, ...pdu } = json;
  try {
    if (rv.legacyEventFormat) return fromWirePdu({ ...pdu, event_id: claimed ?? null }, rv);
    return { ...(pdu as unknown as Pdu), event_id: computeEventId(pdu, rv) };
  } catch (err) {
    return { error: `cannot read the PDU: ${(err as Error).message}` };
  }
}

export function isWireError(value: RoomEvent | { error: string }): value is { error: string } {
  return 'error' in value && !('event_id' in value);
}
