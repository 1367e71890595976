/**
 * The boundary between PDUs on the wire and events inside Conclave (server-server-api: PDUs;
 * rooms: v1.md and v3.md "Event format", v4-event-ids fragment).
 *
 * Inside Conclave every event is a `RoomEvent`: it has its `event_id`, and `prev_events` and
 * `auth_events` are ID lists. On the wire room versions 3 and later leave the ID out (it is the
 * reference hash), while versions 1 and 2 carry it and pair each reference with its hashes.
 */
import { serverNameOf } from './auth-rules.ts';
import { type RoomEvent, toWirePdu, WireFormatError } from './event.ts';
import { computeEventId } from './hashes.ts';
import { isJsonObject } from './json.ts';
import type { RoomVersion } from './room-versions.ts';

export { toWirePdu, WireFormatError };

/**
 * Reads a PDU received in `roomVersion` into a `RoomEvent`: computes the event ID (v3+) or takes
 * it from the event (v1, v2), and turns `[id, hashes]` references into IDs, keeping the hashes in
 * `reference_hashes` so that `toWirePdu` gives back the same wire event. Checks only what the
 * conversion needs (an object, the reference lists, a v1/v2 event ID); throws WireFormatError.
 */
export function fromWirePdu(json: unknown, roomVersion: RoomVersion): RoomEvent {
  if (!isJsonObject(json)) throw new WireFormatError('a PDU is a JSON object');
  const { event_id: carriedId, ...rest } = json;
  const event = { ...rest } as unknown as RoomEvent;
  if (!roomVersion.legacyEventFormat) {
    for (const key of ['prev_events', 'auth_events'] as const) {
      const refs = json[key];
      if (!Array.isArray(refs) || !refs.every((ref) => typeof ref === 'string')) {
        throw new WireFormatError(`${key} is not a list of event IDs`);
      }
    }
    event.event_id = computeEventId(rest, roomVersion);
    return event;
  }
  if (typeof carriedId !== 'string') throw new WireFormatError('the PDU has no event_id');
  const hashes: Record<string, Record<string, string>> = {};
  for (const key of ['prev_events', 'auth_events'] as const) {
    const refs = json[key];
    if (!Array.isArray(refs)) throw new WireFormatError(`${key} is not a list of references`);
    event[key] = refs.map((ref) => {
      const [id, hash] = Array.isArray(ref) ? ref : [];
      if (
        ref === null ||
        !Array.isArray(ref) ||
        ref.length !== 2 ||
        typeof id !== 'string' ||
        !isJsonObject(hash)
      ) {
        throw new WireFormatError(`${key} holds a reference that is not an [event_id, hashes] pair`);
      }
      if (!Object.values(hash).every((value) => typeof value === 'string')) {
        throw new WireFormatError(`the hashes of ${id} in ${key} are not strings`);
      }
      hashes[id] = hash as Record<string, string>;
      return id;
    });
  }
  event.event_id = carriedId;
  event.reference_hashes = hashes;
  return event;
}

/**
 * The servers whose signatures a received event needs (server-server-api: Validating hashes and
 * signatures on received events): the sender's, and in room versions 1 and 2 also the server of
 * the event ID. (A restricted join's authorising server is required by the auth rules, 4.2.1.)
 */
export function requiredSignatureServers(
  event: Pick<RoomEvent, 'sender' | 'event_id'>,
  roomVersion: RoomVersion,
): string[] {
  const servers = new Set<string>();
  const sender = serverNameOf(event.sender);
  if (sender !== undefined) servers.add(sender);
  if (roomVersion.eventIdFormat === 'legacy') {
    const origin = serverNameOf(event.event_id);
    if (origin !== undefined) servers.add(origin);
  }
  return [...servers];
}

/**
 * Whether a signing key whose `valid_until_ts` is `validUntilTs` may vouch for an event sent at
 * `originServerTs` (rooms: v5-signing-requirements fragment). Room versions 1 to 4 accept any
 * key the server published; from 5 on the key must still have been valid when the event was sent.
 * Keys that were expired (`expired_ts`) before the event count in no room version.
 */
export function isSigningKeyValidForEvent(
  key: { validUntilTs?: number; expiredTs?: number },
  originServerTs: number,
  roomVersion: RoomVersion,
): boolean {
  if (key.expiredTs !== undefined && key.expiredTs < originServerTs) return false;
  if (!roomVersion.enforceKeyValidity) return true;
  return key.validUntilTs !== undefined && key.validUntilTs >= originServerTs;
}
