/**
 * The authorisation rules of room versions 1 to 12 (spec: rooms/v1.md ... v12.md, with the
 * v1-auth-rules, v3-auth-rules and v8-auth-rules fragments) and the auth events selection
 * algorithm (server-server-api.md, "Auth events selection").
 *
 * Everything here is pure: no storage, no key fetching. The two rules that need a signature check
 * take the check as an injected function (see `AuthCheckOptions`).
 *
 * Rule numbers. Results name the refusing rule as numbered in the room version being checked.
 * v10 and v11 share one numbering, which the code and comments below use. Older versions lack some
 * rules and so number others differently (see `ruleNumber`): v1-v5 have the `m.room.aliases` rule
 * 4, so every later top-level rule is one higher (v10 rule 9 is v1 rule 10); v1 and v2 have the
 * redaction rule 11; v1-v7 have no membership rule 4.2 (restricted joins' signature), v1-v6 no
 * knock rule; v1-v9 check power levels with one rule on `users` where v10 has three (9.1-9.3).
 * v12 inserts a new rule 2 (the room ID names the create event), so every later top-level rule
 * moves up by one (v11 rule 4.3.2 is v12 rule 5.3.2); it also drops v11 rule 2.4 (a create
 * event among the auth events) and inserts rule 10.4 (creators may not be listed in `users`),
 * moving the later power-levels sub-rules up by one. Where the v12 markdown
 * source skips or repeats a number (it writes 3.5 after 3.3, and two items numbered 10.10), we use
 * the numbers a reader sees on the rendered page: the auth events room ID rule is "3.4".
 * Comments below cite the v10/v11 number first and the v12 number in parentheses.
 *
 * How the pipeline uses this (spec: "Checks performed on receipt of a PDU", steps 4 to 6):
 * - against the event's own auth events: `checkAuthAgainstAuthEvents(event, authEvents, ...)`,
 *   which runs the rules about the `auth_events` list (`checkAuthEvents`) and then `checkAuth` on
 *   the state those events form;
 * - against the state before the event, and the current state: `checkAuth(event, state, ...)`.
 *
 * The create event and `authState`. `checkAuth` reads the create event from `authState` under
 * (`m.room.create`, "") in every room version. In v10 and v11 it is one of the auth events anyway.
 * In v12 it is never listed in `auth_events` (the room ID implies it), so the caller looks it up by
 * `createEventIdForRoomId(event.room_id)` and puts it in the map; room state maps hold it already.
 * `checkAuthAgainstAuthEvents` takes it as `options.createEvent` for v12 and does this itself.
 */
import { isStateEvent, type Pdu, type RoomEvent, type StateMap, stateTuple } from './event.ts';
import { isValidUserId, serverNameOf } from './identifiers.ts';
import { isJsonObject, type JsonObject, type JsonValue } from './json.ts';
import {
  isPowerLevelValue,
  type NamedPowerLevel,
  namedLevel,
  POWER_LEVEL_INTEGER_KEYS,
  type PowerLevelsSource,
  parsePowerLevel,
  requiredLevelForEvent,
  roomCreator,
  roomCreators,
  userPowerLevel,
} from './power-levels.ts';
import { getRoomVersion, type RoomVersion } from './room-versions.ts';

export type AuthResult = { allowed: true } | { allowed: false; rule: string; reason: string };

export interface AuthCheckOptions {
  /**
   * Whether `event` carries a valid signature from `serverName`. Needed by v10/v11 rule 4.2.1
   * (v12 5.2.1): a member event with `join_authorised_via_users_server` must be signed by that
   * user's server. Without it such events are refused. Callers that verified signatures already
   * (events read back from storage, state resolution) may pass a function that consults that result.
   */
  verifyEventSignature?: (event: Pdu, serverName: string) => boolean;
  /**
   * Whether any signature in `signed` (from `content.third_party_invite.signed`) verifies under the
   * ed25519 `publicKey` (unpadded base64) taken from the `m.room.third_party_invite` event. Needed by
   * v10/v11 rule 4.4.1.7 (v12 5.4.1.7); without it third-party invites are refused by rule 4.4.1.8.
   */
  verifyThirdPartyInviteSignature?: (signed: JsonObject, publicKey: string) => boolean;
  /**
   * Whether an event was itself rejected. Used by v10/v11 rule 2.3 (v12 3.3) on the auth events and
   * by v12 rule 2 on the create event. When absent, the caller vouches that none was rejected.
   */
  isRejected?: (event: RoomEvent) => boolean;
}

/** A state tuple, as the auth events selection algorithm returns them. */
export interface StateKeyPair {
  type: string;
  state_key: string;
}

/** What the auth events selection algorithm looks at in an event. */
export type AuthSelectionInput = Pick<Pdu, 'type' | 'sender' | 'state_key' | 'content'>;

const ALLOWED: AuthResult = Object.freeze({ allowed: true });

const CREATE = 'm.room.create';
const MEMBER = 'm.room.member';
const POWER_LEVELS = 'm.room.power_levels';
const JOIN_RULES = 'm.room.join_rules';
const THIRD_PARTY_INVITE = 'm.room.third_party_invite';
const AUTHORISER_KEY = 'join_authorised_via_users_server';

/**
 * Translates a rule number of v10/v11 into the number the same rule has in `roomVersion`
 * (see the module comment). Rules that exist only in v12 are named directly.
 */
export function ruleNumber(roomVersion: RoomVersion, v11Rule: string): string {
  const parts = v11Rule.split('.').map(Number);
  const top = parts[0] ?? 0;
  const second = parts[1];
  const third = parts[2];
  if (roomVersion.roomIdFromCreateEvent) {
    if (top === 2 && second !== undefined && second >= 5) parts[1] = second - 1;
    if (top === 9 && second !== undefined && second >= 4) parts[1] = second + 1;
    if (top >= 2) parts[0] = top + 1;
    return parts.join('.');
  }
  if (!roomVersion.integerPowerLevels && top === 9 && second !== undefined && second >= 3) {
    // v1-v9: one rule on `users` (v10 9.3) comes first; v10 9.1 and 9.2 do not exist.
    parts[1] = second - 2;
  }
  if (!roomVersion.restrictedJoins && top === 4 && second !== undefined) {
    // v1-v7: no 4.2 (the authorising server's signature) and, in joins, no 4.3.5 (restricted).
    if (second === 3 && third !== undefined && third >= 6) parts[2] = third - 1;
    // v1-v6: no knock rule 4.7 either.
    const shifted = second === 8 && !roomVersion.knocking ? 7 : second;
    parts[1] = shifted >= 3 ? shifted - 1 : shifted;
  }
  if (roomVersion.specialCaseAliases && top >= 4) parts[0] = top + 1;
  return parts.join('.');
}

function refuse(rule: string, reason: string): AuthResult {
  return { allowed: false, rule, reason };
}

export { serverNameOf };

/** v12: the room ID is the create event's ID with `!` in place of `$`. */
export function roomIdForCreateEventId(createEventId: string): string {
  return `!${createEventId.startsWith('$') ? createEventId.slice(1) : createEventId}`;
}

/** v12: the create event's ID is the room ID with `$` in place of `!`. */
export function createEventIdForRoomId(roomId: string): string {
  return `$${roomId.startsWith('!') ? roomId.slice(1) : roomId}`;
}

/**
 * The user ID check the rules apply to `additional_creators` (v12 1.4), `users` keys (9.3) and
 * `join_authorised_via_users_server`: the grammar servers must accept over federation, historical
 * localparts included (appendices, "Historical User IDs").
 */
function isUserId(value: unknown): value is string {
  return typeof value === 'string' && isValidUserId(value);
}

function membershipIn(state: StateMap, userId: string): string | undefined {
  const membership = state.get(stateTuple(MEMBER, userId))?.content.membership;
  return typeof membership === 'string' ? membership : undefined;
}

/** The join rule in force. With no `m.room.join_rules` event a room is invite-only. */
function joinRuleIn(state: StateMap): string | undefined {
  const event = state.get(stateTuple(JOIN_RULES, ''));
  if (event === undefined) return 'invite';
  const rule = event.content.join_rule;
  return typeof rule === 'string' ? rule : undefined;
}

// ---------------------------------------------------------------------------------------------
// Auth events selection
// ---------------------------------------------------------------------------------------------

/**
 * The auth events selection algorithm: the state tuples whose current events a new event must list
 * as `auth_events` (each only if the room has such an event). Empty for `m.room.create`. v12 leaves
 * out the create event itself.
 */
export function selectAuthEvents(event: AuthSelectionInput, roomVersion: RoomVersion): StateKeyPair[] {
  if (event.type === CREATE) return [];
  const selected: StateKeyPair[] = [];
  const add = (type: string, stateKey: string) => {
    if (!selected.some((pair) => pair.type === type && pair.state_key === stateKey)) {
      selected.push({ type, state_key: stateKey });
    }
  };
  if (roomVersion.createEventInAuthEvents) add(CREATE, '');
  add(POWER_LEVELS, '');
  add(MEMBER, event.sender);
  if (event.type === MEMBER && typeof event.state_key === 'string') {
    add(MEMBER, event.state_key);
    const membership = event.content.membership;
    if (membership === 'join' || membership === 'invite' || membership === 'knock') add(JOIN_RULES, '');
    if (membership === 'invite' && Object.hasOwn(event.content, 'third_party_invite')) {
      const token = thirdPartySigned(event.content)?.token;
      if (typeof token === 'string') add(THIRD_PARTY_INVITE, token);
    }
    // Restricted rooms (v8+): the authorising user's membership.
    const authoriser = event.content[AUTHORISER_KEY];
    if (roomVersion.restrictedJoins && membership === 'join' && typeof authoriser === 'string') {
      add(MEMBER, authoriser);
    }
  }
  return selected;
}

/**
 * v10/v11 rule 2.2 (v12 3.2): every auth event's (type, state_key) must be one the selection
 * algorithm picks for this event. In v12 that refuses a listed create event.
 */
export function checkAuthEventsMatchSelection(
  event: AuthSelectionInput,
  authEvents: Iterable<Pick<Pdu, 'type' | 'state_key'> & { event_id?: string }>,
  roomVersion: RoomVersion,
): AuthResult {
  const selected = new Set(selectAuthEvents(event, roomVersion).map((p) => stateTuple(p.type, p.state_key)));
  for (const authEvent of authEvents) {
    const label = authEvent.event_id ?? `(${authEvent.type}, ${authEvent.state_key ?? 'no state_key'})`;
    if (typeof authEvent.state_key !== 'string') {
      return refuse(ruleNumber(roomVersion, '2.2'), `auth event ${label} is not a state event`);
    }
    if (!selected.has(stateTuple(authEvent.type, authEvent.state_key))) {
      return refuse(
        ruleNumber(roomVersion, '2.2'),
        `auth event ${label} (${authEvent.type}, ${JSON.stringify(authEvent.state_key)}) is not one the auth events selection picks`,
      );
    }
  }
  return ALLOWED;
}

/**
 * The rules about the `auth_events` list itself, v10/v11 rule 2 (v12 rule 3): no duplicate
 * (type, state_key), nothing the selection algorithm would not pick, nothing rejected, a create
 * event present (v10/v11 only), and every auth event in the event's room. `authEvents` are the
 * events the IDs in `event.auth_events` name. Create events are exempt: rule 1 decides them.
 */
export function checkAuthEvents(
  event: Pdu,
  authEvents: readonly RoomEvent[],
  roomVersion: RoomVersion,
  options: Pick<AuthCheckOptions, 'isRejected'> = {},
): AuthResult {
  if (event.type === CREATE) return ALLOWED;

  // 2.1 (v12 3.1): at most one auth event per (type, state_key).
  // (A non-state auth event has no pair; rule 2.2 refuses it.)
  const seen = new Set<string>();
  for (const authEvent of authEvents) {
    if (typeof authEvent.state_key !== 'string') continue;
    const key = stateTuple(authEvent.type, authEvent.state_key);
    if (seen.has(key)) {
      return refuse(
        ruleNumber(roomVersion, '2.1'),
        `more than one auth event for (${authEvent.type}, ${JSON.stringify(authEvent.state_key)})`,
      );
    }
    seen.add(key);
  }

  // 2.2 (v12 3.2)
  const selection = checkAuthEventsMatchSelection(event, authEvents, roomVersion);
  if (!selection.allowed) return selection;

  // 2.3 (v12 3.3): no auth event may itself have been rejected.
  if (options.isRejected) {
    for (const authEvent of authEvents) {
      if (options.isRejected(authEvent)) {
        return refuse(ruleNumber(roomVersion, '2.3'), `auth event ${authEvent.event_id} was rejected`);
      }
    }
  }

  // 2.4 (v10 and v11 only): the create event must be among them.
  if (
    roomVersion.createEventInAuthEvents &&
    !authEvents.some((e) => e.type === CREATE && e.state_key === '')
  ) {
    return refuse('2.4', 'no m.room.create event among the auth events');
  }

  // 2.5 (v12 3.4): every auth event belongs to this room.
  for (const authEvent of authEvents) {
    if (authEvent.room_id !== event.room_id) {
      return refuse(
        ruleNumber(roomVersion, '2.5'),
        `auth event ${authEvent.event_id} is in room ${authEvent.room_id ?? '(none)'}, not ${event.room_id ?? '(none)'}`,
      );
    }
  }
  return ALLOWED;
}

/** Builds the state map the auth events form, for `checkAuth`. Non-state events are skipped. */
export function authStateFromEvents(events: Iterable<RoomEvent>): StateMap {
  const state: StateMap = new Map();
  for (const event of events) {
    if (typeof event.state_key === 'string') state.set(stateTuple(event.type, event.state_key), event);
  }
  return state;
}

/**
 * Step 4 of the checks on receipt of a PDU: the event against its own auth events. Runs the
 * rules on the `auth_events` list, then `checkAuth` against the state they form. In v12 pass the
 * room's create event as `options.createEvent` (it is not among the auth events); it is ignored
 * in v10 and v11, where the listed create event is used.
 */
export function checkAuthAgainstAuthEvents(
  event: Pdu,
  authEvents: readonly RoomEvent[],
  roomVersion: RoomVersion,
  options: AuthCheckOptions & { createEvent?: RoomEvent } = {},
): AuthResult {
  if (event.type === CREATE) return checkCreateEvent(event, roomVersion);
  const state = authStateFromEvents(authEvents);
  if (roomVersion.roomIdFromCreateEvent) {
    // v12 rule 2 comes before the auth events rules (3.x), so check it first.
    if (options.createEvent) state.set(stateTuple(CREATE, ''), options.createEvent);
    const link = checkRoomIdNamesCreateEvent(event, state.get(stateTuple(CREATE, '')), options);
    if (!link.allowed) return link;
  }
  const listed = checkAuthEvents(event, authEvents, roomVersion, options);
  if (!listed.allowed) return listed;
  return checkAuth(event, state, roomVersion, options);
}

// ---------------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------------

/**
 * Checks `event` against the authorisation rules of `roomVersion`, using `authState` for the
 * state the rules consult: the create event (also in v12, see the module comment), the power
 * levels, the join rules, the sender's and target's member events, the authorising user's member
 * event for restricted joins, and `m.room.third_party_invite` events. Extra entries are ignored,
 * so the full room state works too.
 *
 * Rules about the `auth_events` list itself (v10/v11 2.1-2.3 and 2.5, v12 3.x) need the list and
 * live in `checkAuthEvents`; v10/v11 rule 2.4 is applied here as "the create event is in authState".
 */
export function checkAuth(
  event: Pdu,
  authState: StateMap,
  roomVersion: RoomVersion,
  options: AuthCheckOptions = {},
): AuthResult {
  // Rule 1: the create event.
  if (event.type === CREATE) return checkCreateEvent(event, roomVersion);

  const create = authState.get(stateTuple(CREATE, ''));
  if (roomVersion.roomIdFromCreateEvent) {
    // v12 rule 2
    const link = checkRoomIdNamesCreateEvent(event, create, options);
    if (!link.allowed) return link;
  }
  if (create === undefined) {
    // v10/v11 rule 2.4, as far as a state map can express it (v12 refused above).
    return refuse('2.4', 'no m.room.create event in the auth state');
  }

  // Rule 3 (v12 4): a room created with m.federate false admits only the creating server.
  if (create.content['m.federate'] === false && serverNameOf(event.sender) !== serverNameOf(create.sender)) {
    return refuse(
      ruleNumber(roomVersion, '3'),
      `room does not federate and ${event.sender} is not on the create event's server`,
    );
  }

  // v1-v5 rule 4: m.room.aliases events may be sent by any server, for its own name only.
  if (roomVersion.specialCaseAliases && event.type === 'm.room.aliases') {
    if (typeof event.state_key !== 'string') return refuse('4.1', 'm.room.aliases without a state_key');
    if (serverNameOf(event.sender) !== event.state_key) {
      return refuse('4.2', `${event.sender} cannot set aliases for ${event.state_key}`);
    }
    return ALLOWED;
  }

  const ctx = new RuleContext(event, authState, create, roomVersion, options);

  // Rule 4 (v12 5): membership.
  if (event.type === MEMBER) return checkMembership(ctx);

  // Rule 5 (v12 6): anything else needs the sender to be joined.
  const senderMembership = membershipIn(authState, event.sender);
  if (senderMembership !== 'join') {
    return refuse(
      ruleNumber(roomVersion, '5'),
      `${event.sender} is not joined (membership ${senderMembership ?? 'none'})`,
    );
  }

  const senderLevel = ctx.levelOf(event.sender);

  // Rule 6 (v12 7): third-party invites need the invite level, and nothing else.
  if (event.type === THIRD_PARTY_INVITE) {
    const inviteLevel = ctx.level('invite');
    if (senderLevel >= inviteLevel) return ALLOWED;
    return refuse(
      ruleNumber(roomVersion, '6.1'),
      `${event.sender} has level ${senderLevel}, the invite level is ${inviteLevel}`,
    );
  }

  // Rule 7 (v12 8): the event type's required level.
  const required = requiredLevelForEvent(event.type, isStateEvent(event), ctx.powerLevels, roomVersion);
  if (required > senderLevel) {
    return refuse(
      ruleNumber(roomVersion, '7'),
      `${event.type} needs level ${required}, ${event.sender} has ${senderLevel}`,
    );
  }

  // Rule 8 (v12 9): a state key that looks like a user ID must be the sender's own.
  if (
    typeof event.state_key === 'string' &&
    event.state_key.startsWith('@') &&
    event.state_key !== event.sender
  ) {
    return refuse(
      ruleNumber(roomVersion, '8'),
      `state_key ${event.state_key} starts with @ and is not the sender ${event.sender}`,
    );
  }

  // Rule 9 (v12 10): power levels changes.
  if (event.type === POWER_LEVELS) return checkPowerLevelsChange(ctx, senderLevel);

  // v1 and v2 rule 11: redactions need the redact level, or an event ID on the redacted event's server.
  if (roomVersion.redactionAuthRule && event.type === 'm.room.redaction') {
    const redactLevel = ctx.level('redact');
    if (senderLevel >= redactLevel) return ALLOWED;
    const ownServer = serverNameOf((event as Partial<RoomEvent>).event_id ?? '');
    if (
      typeof event.redacts === 'string' &&
      ownServer !== undefined &&
      serverNameOf(event.redacts) === ownServer
    ) {
      return ALLOWED;
    }
    return refuse(
      '11.3',
      `${event.sender} has level ${senderLevel} below the redact level ${redactLevel}, and the event IDs' servers differ`,
    );
  }

  // Rule 10 (v12 11; v3-v5 11; v1 and v2 12). From v3 on, the redact level is not part of the auth
  // rules.
  return ALLOWED;
}

/** Rule 1: `m.room.create`. The numbering differs by version, so each sub-rule is named directly. */
function checkCreateEvent(event: Pdu, roomVersion: RoomVersion): AuthResult {
  // 1.1: the first event of the room has nothing before it.
  if (event.prev_events.length > 0) return refuse('1.1', 'm.room.create has prev_events');

  if (roomVersion.roomIdFromCreateEvent) {
    // v12 1.2: the room ID is derived from this event's ID, so the event carries none.
    if (event.room_id !== undefined) return refuse('1.2', 'm.room.create has a room_id');
  } else {
    // v10/v11 1.2: the room ID's server is the sender's.
    const roomServer = typeof event.room_id === 'string' ? serverNameOf(event.room_id) : undefined;
    if (roomServer === undefined || roomServer !== serverNameOf(event.sender)) {
      return refuse('1.2', `room_id ${event.room_id ?? '(none)'} is not on the sender's server`);
    }
  }

  // 1.3: a room_version, when given, must be one this server knows.
  if (Object.hasOwn(event.content, 'room_version')) {
    const version = event.content.room_version;
    if (typeof version !== 'string' || getRoomVersion(version) === undefined) {
      return refuse('1.3', `unknown room_version ${JSON.stringify(version)}`);
    }
  }

  // v10 1.4: content must name the creator (v11 dropped the property).
  if (!roomVersion.implicitRoomCreator && !Object.hasOwn(event.content, 'creator')) {
    return refuse('1.4', 'm.room.create content has no creator');
  }

  // v12 1.4: additional_creators, when given, is an array of valid user IDs.
  if (roomVersion.creatorsHaveInfinitePower && Object.hasOwn(event.content, 'additional_creators')) {
    const additional = event.content.additional_creators;
    if (!Array.isArray(additional) || !additional.every((userId) => isUserId(userId))) {
      return refuse('1.4', 'additional_creators is not an array of valid user IDs');
    }
  }

  // 1.5 (v11 1.4): otherwise allow.
  return ALLOWED;
}

/** v12 rule 2: the room ID is the ID of an accepted create event with `!` for `$`. */
function checkRoomIdNamesCreateEvent(
  event: Pdu,
  create: RoomEvent | undefined,
  options: AuthCheckOptions,
): AuthResult {
  if (create === undefined || create.type !== CREATE) {
    return refuse('2', "the room's m.room.create event was not supplied");
  }
  if (event.room_id !== roomIdForCreateEventId(create.event_id)) {
    return refuse('2', `room_id ${event.room_id ?? '(none)'} does not name create event ${create.event_id}`);
  }
  if (options.isRejected?.(create)) return refuse('2', `create event ${create.event_id} was rejected`);
  return ALLOWED;
}

/** What the membership and power-levels rules need to know about the room. */
class RuleContext {
  readonly powerLevels: RoomEvent | undefined;

  constructor(
    readonly event: Pdu,
    readonly state: StateMap,
    readonly create: RoomEvent,
    readonly roomVersion: RoomVersion,
    readonly options: AuthCheckOptions,
  ) {
    this.powerLevels = state.get(stateTuple(POWER_LEVELS, ''));
  }

  levelOf(userId: string): number {
    return userPowerLevel(userId, this.powerLevels, this.create, this.roomVersion);
  }

  /** The invite, kick, ban or redact level. */
  level(name: NamedPowerLevel): number {
    return namedLevel(name, this.powerLevels, this.roomVersion);
  }

  membershipOf(userId: string): string | undefined {
    return membershipIn(this.state, userId);
  }

  rule(v11Rule: string): string {
    return ruleNumber(this.roomVersion, v11Rule);
  }
}

/** Rule 4 (v12 5): `m.room.member`. */
function checkMembership(ctx: RuleContext): AuthResult {
  const { event } = ctx;
  const content = event.content;

  // 4.1: a member event needs a state key and a membership.
  if (typeof event.state_key !== 'string' || !Object.hasOwn(content, 'membership')) {
    return refuse(ctx.rule('4.1'), 'member event without state_key or content.membership');
  }

  // 4.2.1 (v8+): an authorising user's server must have signed the event.
  if (ctx.roomVersion.restrictedJoins && Object.hasOwn(content, AUTHORISER_KEY)) {
    const authoriser = content[AUTHORISER_KEY];
    if (!isUserId(authoriser)) {
      return refuse(ctx.rule('4.2.1'), `${AUTHORISER_KEY} is not a user ID`);
    }
    const server = serverNameOf(authoriser) as string;
    const verify = ctx.options.verifyEventSignature;
    if (verify === undefined) {
      return refuse(ctx.rule('4.2.1'), `no signature verifier given to check ${server}'s signature`);
    }
    if (!verify(event, server)) {
      return refuse(ctx.rule('4.2.1'), `not validly signed by ${server}, the authorising user's server`);
    }
  }

  const membership = content.membership;
  switch (membership) {
    case 'join':
      return checkJoin(ctx, event.state_key);
    case 'invite':
      return checkInvite(ctx, event.state_key);
    case 'leave':
      return checkLeave(ctx, event.state_key);
    case 'ban':
      return checkBan(ctx, event.state_key);
    case 'knock':
      // v7+
      if (ctx.roomVersion.knocking) return checkKnock(ctx, event.state_key);
      return refuse(ctx.rule('4.8'), `room version ${ctx.roomVersion.id} has no knocking`);
    default:
      // 4.8
      return refuse(ctx.rule('4.8'), `unknown membership ${JSON.stringify(membership)}`);
  }
}

/** 4.3 (v12 5.3): joins. */
function checkJoin(ctx: RuleContext, target: string): AuthResult {
  const { event, create } = ctx;

  // 4.3.1: the creator's own first join, right after the create event.
  if (
    event.prev_events.length === 1 &&
    event.prev_events[0] === create.event_id &&
    target === roomCreator(create, ctx.roomVersion)
  ) {
    return ALLOWED;
  }

  // 4.3.2: only the user themself can join.
  if (event.sender !== target) {
    return refuse(ctx.rule('4.3.2'), `${event.sender} cannot join on behalf of ${target}`);
  }

  const current = ctx.membershipOf(event.sender);
  // 4.3.3
  if (current === 'ban') return refuse(ctx.rule('4.3.3'), `${event.sender} is banned`);

  const { roomVersion } = ctx;
  const joinRule = joinRuleIn(ctx.state);
  // 4.3.4: invite-only and (v7+) knock rooms admit the invited (and the already joined).
  const inviteLike = joinRule === 'invite' || (roomVersion.knocking && joinRule === 'knock');
  if (inviteLike && (current === 'invite' || current === 'join')) return ALLOWED;

  // 4.3.5 (v8+): restricted (v10+: and knock_restricted) rooms also admit joins a member with the
  // invite level vouches for.
  const restricted =
    (roomVersion.restrictedJoins && joinRule === 'restricted') ||
    (roomVersion.knockRestricted && joinRule === 'knock_restricted');
  if (restricted) {
    // 4.3.5.1
    if (current === 'join' || current === 'invite') return ALLOWED;
    // 4.3.5.2
    const authoriser = event.content[AUTHORISER_KEY];
    if (typeof authoriser !== 'string') {
      return refuse(ctx.rule('4.3.5.2'), `join rule is ${joinRule} and no ${AUTHORISER_KEY} is given`);
    }
    if (ctx.membershipOf(authoriser) !== 'join') {
      return refuse(ctx.rule('4.3.5.2'), `authorising user ${authoriser} is not joined`);
    }
    const authoriserLevel = ctx.levelOf(authoriser);
    const inviteLevel = ctx.level('invite');
    if (authoriserLevel < inviteLevel) {
      return refuse(
        ctx.rule('4.3.5.2'),
        `authorising user ${authoriser} has level ${authoriserLevel}, the invite level is ${inviteLevel}`,
      );
    }
    // 4.3.5.3
    return ALLOWED;
  }

  // 4.3.6
  if (joinRule === 'public') return ALLOWED;

  // 4.3.7
  return refuse(
    ctx.rule('4.3.7'),
    `join rule is ${joinRule ?? '(malformed)'} and ${event.sender}'s membership is ${current ?? 'none'}`,
  );
}

/** The object at `content.third_party_invite.signed`, if there is one. */
function thirdPartySigned(content: JsonObject): JsonObject | undefined {
  const invite = content.third_party_invite;
  if (!isJsonObject(invite) || !Object.hasOwn(invite, 'signed')) return undefined;
  const signed = invite.signed;
  return isJsonObject(signed) ? signed : undefined;
}

/** The public keys of an `m.room.third_party_invite` event: `public_key` and `public_keys[].public_key`. */
function thirdPartyPublicKeys(content: JsonObject): string[] {
  const keys: string[] = [];
  if (typeof content.public_key === 'string') keys.push(content.public_key);
  const list: JsonValue | undefined = content.public_keys;
  if (Array.isArray(list)) {
    for (const entry of list) {
      if (isJsonObject(entry) && typeof entry.public_key === 'string') keys.push(entry.public_key);
    }
  }
  return keys;
}

/** 4.4 (v12 5.4): invites. */
function checkInvite(ctx: RuleContext, target: string): AuthResult {
  const { event } = ctx;
  const targetMembership = ctx.membershipOf(target);

  // 4.4.1: invites that redeem a third-party invite.
  if (Object.hasOwn(event.content, 'third_party_invite')) {
    // 4.4.1.1
    if (targetMembership === 'ban') return refuse(ctx.rule('4.4.1.1'), `${target} is banned`);
    // 4.4.1.2
    const signed = thirdPartySigned(event.content);
    if (signed === undefined) return refuse(ctx.rule('4.4.1.2'), 'third_party_invite has no signed object');
    // 4.4.1.3
    const { mxid, token } = signed;
    if (typeof mxid !== 'string' || typeof token !== 'string') {
      return refuse(ctx.rule('4.4.1.3'), 'third_party_invite.signed lacks mxid or token');
    }
    // 4.4.1.4
    if (mxid !== target)
      return refuse(ctx.rule('4.4.1.4'), `signed mxid ${mxid} is not the target ${target}`);
    // 4.4.1.5
    const thirdPartyInvite = ctx.state.get(stateTuple(THIRD_PARTY_INVITE, token));
    if (thirdPartyInvite === undefined) {
      return refuse(ctx.rule('4.4.1.5'), `no m.room.third_party_invite for token ${token}`);
    }
    // 4.4.1.6
    if (event.sender !== thirdPartyInvite.sender) {
      return refuse(
        ctx.rule('4.4.1.6'),
        `${event.sender} did not send the third-party invite (${thirdPartyInvite.sender} did)`,
      );
    }
    // 4.4.1.7
    const verify = ctx.options.verifyThirdPartyInviteSignature;
    if (verify === undefined) {
      return refuse(ctx.rule('4.4.1.8'), 'no verifier given for third-party invite signatures');
    }
    if (thirdPartyPublicKeys(thirdPartyInvite.content).some((key) => verify(signed, key))) return ALLOWED;
    // 4.4.1.8
    return refuse(ctx.rule('4.4.1.8'), 'no signature in signed matches a key of the third-party invite');
  }

  // 4.4.2
  const senderMembership = ctx.membershipOf(event.sender);
  if (senderMembership !== 'join') {
    return refuse(
      ctx.rule('4.4.2'),
      `${event.sender} is not joined (membership ${senderMembership ?? 'none'})`,
    );
  }
  // 4.4.3
  if (targetMembership === 'join' || targetMembership === 'ban') {
    return refuse(ctx.rule('4.4.3'), `${target}'s membership is ${targetMembership}`);
  }
  // 4.4.4
  const senderLevel = ctx.levelOf(event.sender);
  const inviteLevel = ctx.level('invite');
  if (senderLevel >= inviteLevel) return ALLOWED;
  // 4.4.5
  return refuse(
    ctx.rule('4.4.5'),
    `${event.sender} has level ${senderLevel}, the invite level is ${inviteLevel}`,
  );
}

/** 4.5 (v12 5.5): leaving, kicks and unbans. */
function checkLeave(ctx: RuleContext, target: string): AuthResult {
  const { event } = ctx;
  const senderMembership = ctx.membershipOf(event.sender);

  // 4.5.1: leaving oneself, or rejecting an invite, or (v7+) retracting a knock.
  if (event.sender === target) {
    const knocked = ctx.roomVersion.knocking && senderMembership === 'knock';
    if (senderMembership === 'invite' || senderMembership === 'join' || knocked) return ALLOWED;
    return refuse(ctx.rule('4.5.1'), `${target} cannot leave from membership ${senderMembership ?? 'none'}`);
  }
  // 4.5.2
  if (senderMembership !== 'join') {
    return refuse(
      ctx.rule('4.5.2'),
      `${event.sender} is not joined (membership ${senderMembership ?? 'none'})`,
    );
  }
  const senderLevel = ctx.levelOf(event.sender);
  // 4.5.3: unbanning needs the ban level.
  const banLevel = ctx.level('ban');
  if (ctx.membershipOf(target) === 'ban' && senderLevel < banLevel) {
    return refuse(ctx.rule('4.5.3'), `${event.sender} has level ${senderLevel}, unbanning needs ${banLevel}`);
  }
  // 4.5.4: kicking needs the kick level and a target below the sender.
  const kickLevel = ctx.level('kick');
  const targetLevel = ctx.levelOf(target);
  if (senderLevel >= kickLevel && targetLevel < senderLevel) return ALLOWED;
  // 4.5.5
  return refuse(
    ctx.rule('4.5.5'),
    `${event.sender} (level ${senderLevel}, kick level ${kickLevel}) cannot remove ${target} (level ${targetLevel})`,
  );
}

/** 4.6 (v12 5.6): bans. */
function checkBan(ctx: RuleContext, target: string): AuthResult {
  const { event } = ctx;
  const senderMembership = ctx.membershipOf(event.sender);
  // 4.6.1
  if (senderMembership !== 'join') {
    return refuse(
      ctx.rule('4.6.1'),
      `${event.sender} is not joined (membership ${senderMembership ?? 'none'})`,
    );
  }
  // 4.6.2
  const senderLevel = ctx.levelOf(event.sender);
  const banLevel = ctx.level('ban');
  const targetLevel = ctx.levelOf(target);
  if (senderLevel >= banLevel && targetLevel < senderLevel) return ALLOWED;
  // 4.6.3
  return refuse(
    ctx.rule('4.6.3'),
    `${event.sender} (level ${senderLevel}, ban level ${banLevel}) cannot ban ${target} (level ${targetLevel})`,
  );
}

/** 4.7 (v12 5.7): knocks. */
function checkKnock(ctx: RuleContext, target: string): AuthResult {
  const { event } = ctx;
  // 4.7.1: only rooms whose join rule allows knocking (knock_restricted: v10+).
  const joinRule = joinRuleIn(ctx.state);
  if (joinRule !== 'knock' && !(ctx.roomVersion.knockRestricted && joinRule === 'knock_restricted')) {
    return refuse(ctx.rule('4.7.1'), `join rule ${joinRule ?? '(malformed)'} does not allow knocking`);
  }
  // 4.7.2
  if (event.sender !== target) {
    return refuse(ctx.rule('4.7.2'), `${event.sender} cannot knock on behalf of ${target}`);
  }
  // 4.7.3
  const current = ctx.membershipOf(event.sender);
  if (current !== 'ban' && current !== 'invite' && current !== 'join') return ALLOWED;
  // 4.7.4
  return refuse(ctx.rule('4.7.4'), `${event.sender} cannot knock with membership ${current}`);
}

/** An object whose values are all levels in `roomVersion` (integers; v1-v9 also integer strings). */
function isLevelMap(value: JsonValue | undefined, roomVersion: RoomVersion): value is JsonObject {
  return (
    isJsonObject(value) &&
    Object.values(value).every((level) => parsePowerLevel(level, roomVersion) !== undefined)
  );
}

function presentLevel(
  map: JsonObject | undefined,
  key: string,
  roomVersion: RoomVersion,
): number | undefined {
  if (map === undefined || !Object.hasOwn(map, key)) return undefined;
  return parsePowerLevel(map[key], roomVersion);
}

function mapField(content: JsonObject, key: string): JsonObject | undefined {
  const value = Object.hasOwn(content, key) ? content[key] : undefined;
  return isJsonObject(value) ? value : undefined;
}

/** Rule 9 (v12 10): `m.room.power_levels`. */
function checkPowerLevelsChange(ctx: RuleContext, senderLevel: number): AuthResult {
  const content = ctx.event.content;
  const rv = ctx.roomVersion;
  const levelOf = (map: JsonObject | undefined, key: string) => presentLevel(map, key, rv);

  if (rv.integerPowerLevels) {
    // 9.1 (v10+): the single levels are integers.
    for (const key of POWER_LEVEL_INTEGER_KEYS) {
      if (Object.hasOwn(content, key) && !isPowerLevelValue(content[key])) {
        return refuse(ctx.rule('9.1'), `${key} is not an integer`);
      }
    }
    // 9.2 (v10+): events and notifications map to integers.
    for (const key of ['events', 'notifications']) {
      if (Object.hasOwn(content, key) && !isLevelMap(content[key], rv)) {
        return refuse(ctx.rule('9.2'), `${key} is not an object of integers`);
      }
    }
  }
  // 9.3 (v1-v9: 9.1, or 10.1 in v1-v5): users maps valid user IDs to integers (v1-v9: or integer
  // strings). An absent `users` is read as empty.
  if (Object.hasOwn(content, 'users')) {
    const users = content.users;
    if (!isLevelMap(users, rv)) return refuse(ctx.rule('9.3'), 'users is not an object of integers');
    const badKey = Object.keys(users).find((userId) => !isUserId(userId));
    if (badKey !== undefined)
      return refuse(ctx.rule('9.3'), `users has a key that is not a user ID: ${badKey}`);
  }
  const newUsers = mapField(content, 'users') ?? {};

  // v12 10.4: creators have infinite power and cannot be listed.
  if (ctx.roomVersion.creatorsHaveInfinitePower) {
    const listed = roomCreators(ctx.create, ctx.roomVersion).find((creator) =>
      Object.hasOwn(newUsers, creator),
    );
    if (listed !== undefined) return refuse('10.4', `room creator ${listed} cannot be listed in users`);
  }

  // 9.4: the first power levels event needs nothing more.
  const current: PowerLevelsSource | undefined = ctx.powerLevels;
  if (current === undefined) return ALLOWED;
  const old = current.content;

  // 9.5: the single levels may change only if both old and new value are within the sender's reach.
  for (const key of POWER_LEVEL_INTEGER_KEYS) {
    const before = levelOf(old, key);
    const after = levelOf(content, key);
    if (before === after) continue;
    if (before !== undefined && before > senderLevel) {
      return refuse(
        ctx.rule('9.5.1'),
        `${key} is ${before}, above ${ctx.event.sender}'s level ${senderLevel}`,
      );
    }
    if (after !== undefined && after > senderLevel) {
      return refuse(
        ctx.rule('9.5.2'),
        `${key} would be ${after}, above ${ctx.event.sender}'s level ${senderLevel}`,
      );
    }
  }

  // v1-v5 guard only `events`; v6 added `notifications`.
  const maps = rv.notificationsInPowerLevelRules
    ? (['events', 'notifications'] as const)
    : (['events'] as const);
  // 9.6: entries changed or removed in events/notifications: the old value is within reach.
  for (const name of maps) {
    const before = mapField(old, name) ?? {};
    const after = mapField(content, name) ?? {};
    for (const key of Object.keys(before)) {
      const was = levelOf(before, key);
      if (was === undefined || was === levelOf(after, key)) continue;
      if (was > senderLevel) {
        return refuse(
          ctx.rule('9.6.1'),
          `${name}.${key} is ${was}, above ${ctx.event.sender}'s level ${senderLevel}`,
        );
      }
    }
  }
  // 9.7: entries added or changed in events/notifications: the new value is within reach.
  for (const name of maps) {
    const before = mapField(old, name) ?? {};
    const after = mapField(content, name) ?? {};
    for (const key of Object.keys(after)) {
      const next = levelOf(after, key);
      if (next === undefined || next === levelOf(before, key)) continue;
      if (next > senderLevel) {
        return refuse(
          ctx.rule('9.7.1'),
          `${name}.${key} would be ${next}, above ${ctx.event.sender}'s level ${senderLevel}`,
        );
      }
    }
  }

  const oldUsers = mapField(old, 'users') ?? {};
  // 9.8: other users' entries changed or removed: only those strictly below the sender.
  for (const userId of Object.keys(oldUsers)) {
    if (userId === ctx.event.sender) continue;
    const was = levelOf(oldUsers, userId);
    if (was === undefined || was === levelOf(newUsers, userId)) continue;
    if (was >= senderLevel) {
      return refuse(
        ctx.rule('9.8.1'),
        `${userId} has level ${was}, not below ${ctx.event.sender}'s level ${senderLevel}`,
      );
    }
  }
  // 9.9: entries added or changed (the sender's own included): never above the sender.
  for (const userId of Object.keys(newUsers)) {
    const next = levelOf(newUsers, userId);
    if (next === undefined || next === levelOf(oldUsers, userId)) continue;
    if (next > senderLevel) {
      return refuse(
        ctx.rule('9.9.1'),
        `${userId} would get level ${next}, above ${ctx.event.sender}'s level ${senderLevel}`,
      );
    }
  }

  // 9.10 (v12 10.11)
  return ALLOWED;
}
