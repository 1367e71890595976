/**
 * Power levels: who may do what in a room, read from `m.room.power_levels` and `m.room.create`.
 *
 * Pure helpers shared by the auth rules (auth-rules.ts) and the rooms service. Defaults follow the
 * `m.room.power_levels` event schema and the definitions in the server-server API ("Required Power
 * Level", "Invite Level, Kick Level, Ban Level, Redact Level"):
 * - users_default 0, events_default 0, state_default 50;
 * - invite 0, kick 50, ban 50, redact 50; notifications.room 50;
 * - with no power levels event at all: in v10 and v11 the room creator has 100 and everyone else 0;
 *   in v12 the creators (create event sender and `additional_creators`) have an infinitely high
 *   level whether or not a power levels event exists, represented here as `Infinity`.
 *
 * A value that is present but not a level is treated as absent. Room versions 10+ refuse such
 * power levels events (auth rule 9.1-9.3, v12 10.1-10.3), so that only matters for defensive reads.
 * Room versions 1 to 9 also read integer strings ("50", " +050 "), and 1 to 5 floats, truncated
 * (rooms: v1-stringy-power-levels and v1-floaty-power-levels fragments): pass the room version
 * to the readers below to get that. Without one, only integers count.
 */
import type { Pdu } from './event.ts';
import { serverNameOf } from './identifiers.ts';
import { isJsonObject, type JsonObject } from './json.ts';
import type { RoomVersion } from './room-versions.ts';

/** Anything carrying power-levels content: the `m.room.power_levels` event itself, or `{ content }`. */
export type PowerLevelsSource = Pick<Pdu, 'content'>;

/** The parts of an `m.room.create` event that decide who the creators are. */
export type CreateEventSource = Pick<Pdu, 'sender' | 'content'>;

/** The level-valued top-level keys of power levels content. */
export const POWER_LEVEL_INTEGER_KEYS = [
  'users_default',
  'events_default',
  'state_default',
  'ban',
  'redact',
  'kick',
  'invite',
] as const;
export type PowerLevelIntegerKey = (typeof POWER_LEVEL_INTEGER_KEYS)[number];

/** The keys naming the level needed for a membership or redaction action. */
export type NamedPowerLevel = 'invite' | 'kick' | 'ban' | 'redact';

export const DEFAULT_USERS_LEVEL = 0;
export const DEFAULT_EVENTS_LEVEL = 0;
export const DEFAULT_STATE_LEVEL = 50;
export const DEFAULT_NAMED_LEVELS: Readonly<Record<NamedPowerLevel, number>> = {
  invite: 0,
  kick: 50,
  ban: 50,
  redact: 50,
};
export const DEFAULT_ROOM_NOTIFICATION_LEVEL = 50;
/** v10 and v11: the creator's level when the room has no power levels event. */
export const DEFAULT_CREATOR_LEVEL = 100;

/**
 * True for a number Matrix accepts as a power level: an integer in canonical JSON's range
 * [-(2**53)+1, (2**53)-1]. Strings and floats are not accepted (room versions 10+).
 */
export function isPowerLevelValue(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value);
}

/** Base 10 digits with an optional sign and any surrounding whitespace (v1-stringy-power-levels). */
const INTEGER_STRING = /^\s*[+-]?\d+\s*$/;

/**
 * The level a power levels value stands for in `roomVersion`, or undefined if it is none: an
 * integer; in v1-v9 also an integer string; in v1-v5 also a finite float, truncated.
 */
export function parsePowerLevel(value: unknown, roomVersion?: RoomVersion): number | undefined {
  if (isPowerLevelValue(value)) return value;
  if (roomVersion === undefined || roomVersion.integerPowerLevels) return undefined;
  let level: number | undefined;
  if (typeof value === 'string' && INTEGER_STRING.test(value)) level = Number(value.trim());
  else if (typeof value === 'number' && !roomVersion.strictCanonicalJson && Number.isFinite(value)) {
    level = Math.trunc(value);
  }
  // `+ 0` turns -0 into 0.
  return level !== undefined && Number.isSafeInteger(level) ? level + 0 : undefined;
}

function objectField(content: JsonObject | undefined, key: string): JsonObject | undefined {
  if (content === undefined || !Object.hasOwn(content, key)) return undefined;
  const value = content[key];
  return isJsonObject(value) ? value : undefined;
}

function ownLevel(map: JsonObject | undefined, key: string, roomVersion?: RoomVersion): number | undefined {
  if (map === undefined || !Object.hasOwn(map, key)) return undefined;
  return parsePowerLevel(map[key], roomVersion);
}

/**
 * The user who created the room, for the rules that name a single creator (the first join, v10/v11
 * rule 4.3.1 and v12 rule 5.3.1): `content.creator` in v10, the create event's `sender` from v11.
 */
export function roomCreator(createEvent: CreateEventSource, roomVersion: RoomVersion): string | undefined {
  if (roomVersion.implicitRoomCreator) return createEvent.sender;
  const creator = createEvent.content.creator;
  return typeof creator === 'string' ? creator : undefined;
}

/**
 * Everyone the room version counts as a creator: the single creator in v10 and v11; in v12 the
 * create event's sender plus every string in `content.additional_creators` (auth rule 1.4 has
 * already refused create events whose list is malformed).
 */
export function roomCreators(createEvent: CreateEventSource, roomVersion: RoomVersion): string[] {
  const creator = roomCreator(createEvent, roomVersion);
  const creators = creator === undefined ? [] : [creator];
  if (roomVersion.creatorsHaveInfinitePower) {
    const additional = createEvent.content.additional_creators;
    if (Array.isArray(additional)) {
      for (const userId of additional) {
        if (typeof userId === 'string' && !creators.includes(userId)) creators.push(userId);
      }
    }
  }
  return creators;
}

export function isRoomCreator(
  userId: string,
  createEvent: CreateEventSource,
  roomVersion: RoomVersion,
): boolean {
  return roomCreators(createEvent, roomVersion).includes(userId);
}

/**
 * A user's power level. `powerLevels` is the current `m.room.power_levels` event (or its content
 * wrapped as `{ content }`), undefined when the room has none; `createEvent` is the room's create
 * event, needed to find the creators. Returns `Infinity` for v12 creators.
 */
export function userPowerLevel(
  userId: string,
  powerLevels: PowerLevelsSource | undefined,
  createEvent: CreateEventSource | undefined,
  roomVersion: RoomVersion,
): number {
  if (
    roomVersion.creatorsHaveInfinitePower &&
    createEvent &&
    isRoomCreator(userId, createEvent, roomVersion)
  ) {
    return Infinity;
  }
  if (powerLevels === undefined) {
    if (
      !roomVersion.creatorsHaveInfinitePower &&
      createEvent &&
      roomCreator(createEvent, roomVersion) === userId
    ) {
      return DEFAULT_CREATOR_LEVEL;
    }
    return DEFAULT_USERS_LEVEL;
  }
  const content = powerLevels.content;
  return (
    ownLevel(objectField(content, 'users'), userId, roomVersion) ??
    ownLevel(content, 'users_default', roomVersion) ??
    DEFAULT_USERS_LEVEL
  );
}

/** The level `users_default` gives everyone not listed in `users`. */
export function usersDefaultLevel(
  powerLevels: PowerLevelsSource | undefined,
  roomVersion?: RoomVersion,
): number {
  return ownLevel(powerLevels?.content, 'users_default', roomVersion) ?? DEFAULT_USERS_LEVEL;
}

/**
 * The event type's required power level: its entry in `events`, else `state_default` for state
 * events or `events_default` for message events. Membership events are governed by the invite,
 * kick and ban levels in the auth rules, not by this (the rules only consult it for other types).
 */
export function requiredLevelForEvent(
  type: string,
  isState: boolean,
  powerLevels: PowerLevelsSource | undefined,
  roomVersion?: RoomVersion,
): number {
  const content = powerLevels?.content;
  const explicit = ownLevel(objectField(content, 'events'), type, roomVersion);
  if (explicit !== undefined) return explicit;
  return isState
    ? (ownLevel(content, 'state_default', roomVersion) ?? DEFAULT_STATE_LEVEL)
    : (ownLevel(content, 'events_default', roomVersion) ?? DEFAULT_EVENTS_LEVEL);
}

/** The invite, kick, ban or redact level. */
export function namedLevel(
  name: NamedPowerLevel,
  powerLevels: PowerLevelsSource | undefined,
  roomVersion?: RoomVersion,
): number {
  return ownLevel(powerLevels?.content, name, roomVersion) ?? DEFAULT_NAMED_LEVELS[name];
}

/**
 * The level needed to trigger a notification kind, such as `room` for `@room`. The spec only
 * defines a default for `room` (50); other keys get the same default here.
 */
export function notificationLevel(
  key: string,
  powerLevels: PowerLevelsSource | undefined,
  roomVersion?: RoomVersion,
): number {
  return (
    ownLevel(objectField(powerLevels?.content, 'notifications'), key, roomVersion) ??
    DEFAULT_ROOM_NOTIFICATION_LEVEL
  );
}

/**
 * Whether `userId` may send an event of this type, by level alone (the auth rules add membership and
 * other checks on top).
 */
export function canSendEvent(
  userId: string,
  type: string,
  isState: boolean,
  powerLevels: PowerLevelsSource | undefined,
  createEvent: CreateEventSource | undefined,
  roomVersion: RoomVersion,
): boolean {
  return (
    userPowerLevel(userId, powerLevels, createEvent, roomVersion) >=
    requiredLevelForEvent(type, isState, powerLevels, roomVersion)
  );
}

/**
 * Whether `userId` may send the state event (`type`, `stateKey`), as far as power goes: the level
 * the type requires (its `events` entry, else `state_default`; auth rule 7, v12 8), and a state
 * key that looks like a user ID must be the sender's own (rule 8, v12 9). Membership and the
 * power levels change rules come on top, in the auth rules.
 */
export function maySendState(
  userId: string,
  type: string,
  stateKey: string,
  powerLevels: PowerLevelsSource | undefined,
  createEvent: CreateEventSource | undefined,
  roomVersion: RoomVersion,
): boolean {
  if (stateKey.startsWith('@') && stateKey !== userId) return false;
  return canSendEvent(userId, type, true, powerLevels, createEvent, roomVersion);
}

function hasRedactLevel(
  userId: string,
  powerLevels: PowerLevelsSource | undefined,
  createEvent: CreateEventSource | undefined,
  roomVersion: RoomVersion,
): boolean {
  return (
    userPowerLevel(userId, powerLevels, createEvent, roomVersion) >=
    namedLevel('redact', powerLevels, roomVersion)
  );
}

/**
 * Whether `userId` may redact an event `originalSender` sent (client-server API: Redactions): their
 * own events always, anyone else's with the redact level.
 */
export function mayRedact(
  userId: string,
  originalSender: string,
  powerLevels: PowerLevelsSource | undefined,
  createEvent: CreateEventSource | undefined,
  roomVersion: RoomVersion,
): boolean {
  return userId === originalSender || hasRedactLevel(userId, powerLevels, createEvent, roomVersion);
}

/**
 * Whether a received redaction by `redactionSender` of an event by `originalSender` takes effect
 * (rooms: v3-handling-redactions fragment, room versions 3 and later): the redact level, or a
 * sender on the original sender's server. (In v1 and v2 auth rule 11 decides instead.)
 */
export function redactionTakesEffect(
  redactionSender: string,
  originalSender: string,
  powerLevels: PowerLevelsSource | undefined,
  createEvent: CreateEventSource | undefined,
  roomVersion: RoomVersion,
): boolean {
  if (hasRedactLevel(redactionSender, powerLevels, createEvent, roomVersion)) return true;
  const own = serverNameOf(redactionSender);
  return own !== undefined && own === serverNameOf(originalSender);
}
