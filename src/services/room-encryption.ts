import type { JsonObject } from '../protocol/json.ts';

/**
 * The rule that keeps an encrypted room encrypted, applied to the `m.room.encryption` events
 * this server's own clients send (not an authorization rule: events from other servers are
 * judged by the room version's auth rules alone).
 *
 * A room counts as encrypted once its current `m.room.encryption` event (state key "") names an
 * algorithm. From then on a new `m.room.encryption` event must name the same algorithm: one
 * without an algorithm (which clients would read as encryption switched off) or with another
 * algorithm is refused. Re-sending the same algorithm is allowed, also with other rotation
 * settings (`rotation_period_ms`, `rotation_period_msgs`), which do not weaken what the room
 * already is.
 *
 * Returns why the change is refused, or undefined when it is allowed.
 */
export function encryptionChangeRefusal(
  current: JsonObject | undefined,
  next: JsonObject,
): string | undefined {
  const currentAlgorithm = algorithmOf(current);
  if (currentAlgorithm === undefined) return undefined;
  const nextAlgorithm = algorithmOf(next);
  if (nextAlgorithm === undefined) return 'Encryption cannot be turned off once enabled in a room';
  if (nextAlgorithm !== currentAlgorithm) {
    return 'The encryption algorithm of a room cannot be changed once set';
  }
  return undefined;
}

function algorithmOf(content: JsonObject | undefined): string | undefined {
  const algorithm = content?.algorithm;
  return typeof algorithm === 'string' && algorithm !== '' ? algorithm : undefined;
}
