import { isValidUserId } from '../protocol/identifiers.ts';
import { isJsonObject, type JsonObject } from '../protocol/json.ts';
import { isPowerLevelValue, POWER_LEVEL_INTEGER_KEYS } from '../protocol/power-levels.ts';
import type { RoomVersion } from '../protocol/room-versions.ts';

/**
 * Content checks a client gets a 400 for, before any event is built. The authorization rules
 * refuse the same content (with a 403, as for a sender without the power); here a malformed
 * request is told it is malformed (client-server API: 400 for invalid power levels and create
 * content; Complement's MSC4289 tests).
 */

/** From room version 10, power levels are integers; earlier versions also accept numeric strings. */
function integerLevelsOnly(rv: RoomVersion): boolean {
  return Number.parseInt(rv.id, 10) >= 10;
}

function isLevel(value: unknown, rv: RoomVersion): boolean {
  if (isPowerLevelValue(value)) return true;
  return !integerLevelsOnly(rv) && typeof value === 'string' && /^\s*[+-]?\d{1,16}\s*$/.test(value);
}

/**
 * Why this `m.room.power_levels` content is malformed for the room, or undefined when it is not:
 * levels that are not integers in canonical JSON's range, `users` keys that are not user IDs, and
 * in room version 12 a creator listed in `users` (creators' power is infinite and implicit).
 */
export function powerLevelsProblem(
  content: JsonObject,
  rv: RoomVersion,
  creators: string[],
): string | undefined {
  for (const key of POWER_LEVEL_INTEGER_KEYS) {
    if (Object.hasOwn(content, key) && !isLevel(content[key], rv))
      return `${key} is not an integer power level`;
  }
  for (const key of ['events', 'notifications', 'users']) {
    if (!Object.hasOwn(content, key)) continue;
    const map = content[key];
    if (!isJsonObject(map)) return `${key} is not an object`;
    for (const [name, level] of Object.entries(map)) {
      if (!isLevel(level, rv)) return `${key}.${name} is not an integer power level`;
      if (key === 'users' && !isValidUserId(name)) return `users has a key that is not a user ID: ${name}`;
    }
  }
  if (rv.creatorsHaveInfinitePower && isJsonObject(content.users)) {
    const listed = creators.find((c) => Object.hasOwn(content.users as JsonObject, c));
    if (listed !== undefined) return `${listed} is a room creator and cannot be listed in users`;
  }
  return undefined;
}

/** The creators `creation_content` names in room version 12, or a reason it is malformed. */
export function additionalCreators(
  creationContent: JsonObject,
  rv: RoomVersion,
): { creators: string[] } | { problem: string } {
  if (!rv.creatorsHaveInfinitePower || !Object.hasOwn(creationContent, 'additional_creators')) {
    return { creators: [] };
  }
  const list = creationContent.additional_creators;
  if (!Array.isArray(list)) return { problem: 'additional_creators is not an array' };
  for (const u of list) {
    if (typeof u !== 'string' || !isValidUserId(u)) {
      return { problem: `additional_creators holds something that is not a user ID: ${JSON.stringify(u)}` };
    }
  }
  return { creators: list as string[] };
}
