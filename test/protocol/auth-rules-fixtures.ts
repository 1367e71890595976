/**
 * A small event factory for the auth rules tests. Event IDs are plain labels (`$create`, `$e7`):
 * the auth rules never look at hashes or signatures.
 *
 * Personas: alice creates rooms, bob is invited, carol is alice's moderator (level 50 when the
 * room has her in its power levels), mallory is an outsider.
 */
import type { Test } from 'tap';
import {
  type AuthCheckOptions,
  type AuthResult,
  checkAuth,
  ruleNumber,
} from '../../src/protocol/auth-rules.ts';
import { type RoomEvent, type StateMap, stateTuple } from '../../src/protocol/event.ts';
import type { JsonObject } from '../../src/protocol/json.ts';
import {
  ROOM_VERSION_IDS,
  ROOM_VERSIONS,
  type RoomVersion,
  type RoomVersionId,
} from '../../src/protocol/room-versions.ts';

export const ALICE = '@alice:a.test';
export const BOB = '@bob:b.test';
export const CAROL = '@carol:a.test';
export const MALLORY = '@mallory:m.test';

/** Every room version: the rules shared between versions run for each. */
export const VERSION_IDS: readonly RoomVersionId[] = ROOM_VERSION_IDS;

/** The versions with a feature, e.g. `versionsWith('knocking')`. */
export function versionsWith(flag: keyof RoomVersion, value: unknown = true): RoomVersionId[] {
  return VERSION_IDS.filter((id) => ROOM_VERSIONS[id][flag] === value);
}

export interface EventSpec {
  type: string;
  sender: string;
  state_key?: string;
  content?: JsonObject;
  prev_events?: string[];
  auth_events?: string[];
  event_id?: string;
  /** Overrides the room's ID; `null` leaves `room_id` out. */
  room_id?: string | null;
}

let counter = 0;

/** Builds an event of any room; `room_id` is taken from the spec as given. */
export function makeEvent(spec: EventSpec): RoomEvent {
  counter += 1;
  const event: RoomEvent = {
    event_id: spec.event_id ?? `$e${counter}`,
    type: spec.type,
    sender: spec.sender,
    content: spec.content ?? {},
    origin_server_ts: 1_700_000_000_000 + counter,
    depth: counter,
    prev_events: spec.prev_events ?? ['$prev'],
    auth_events: spec.auth_events ?? [],
    hashes: { sha256: 'unchecked' },
    signatures: {},
  };
  if (typeof spec.room_id === 'string') event.room_id = spec.room_id;
  if (spec.state_key !== undefined) event.state_key = spec.state_key;
  return event;
}

export interface RoomOptions {
  creator?: string;
  /** Extra create content (v12 `additional_creators`, `m.federate`, ...). */
  createContent?: JsonObject;
  createEventId?: string;
}

/** The content a well-formed create event has in each version. */
export function createContentFor(version: RoomVersion, creator: string, extra: JsonObject = {}): JsonObject {
  const content: JsonObject = { room_version: version.id, ...extra };
  if (!version.implicitRoomCreator && !Object.hasOwn(extra, 'creator')) content.creator = creator;
  return content;
}

/** A room under construction: its create event and a mutable current state. */
export class TestRoom {
  readonly version: RoomVersion;
  readonly roomId: string;
  readonly create: RoomEvent;
  readonly creator: string;
  state: StateMap = new Map();

  constructor(versionId: RoomVersionId, options: RoomOptions = {}) {
    this.version = ROOM_VERSIONS[versionId];
    this.creator = options.creator ?? ALICE;
    const createEventId = options.createEventId ?? `$create${versionId}`;
    // v12: the room ID is the create event ID with `!`; v10/v11: a domain-qualified ID.
    this.roomId = this.version.roomIdFromCreateEvent
      ? `!${createEventId.slice(1)}`
      : `!room${versionId}:${this.creator.split(':')[1]}`;
    this.create = makeEvent({
      event_id: createEventId,
      type: 'm.room.create',
      sender: this.creator,
      state_key: '',
      content: createContentFor(this.version, this.creator, options.createContent),
      prev_events: [],
      room_id: this.version.roomIdFromCreateEvent ? null : this.roomId,
    });
    this.state.set(stateTuple('m.room.create', ''), this.create);
  }

  get v12(): boolean {
    return this.version.id === '12';
  }

  /**
   * The rule number to expect: the v12 one as given, else the v10/v11 one as the room's version
   * numbers it (`ruleNumber`, whose table for v1-v9 auth-rules-create.test.ts checks).
   */
  rule(v10v11: string, v12: string): string {
    return this.v12 ? v12 : ruleNumber(this.version, v10v11);
  }

  event(spec: EventSpec): RoomEvent {
    return makeEvent({ ...spec, room_id: spec.room_id === undefined ? this.roomId : spec.room_id });
  }

  member(sender: string, target: string, membership: string, extra: JsonObject = {}): RoomEvent {
    return this.event({
      type: 'm.room.member',
      sender,
      state_key: target,
      content: { membership, ...extra },
    });
  }

  powerLevels(sender: string, content: JsonObject): RoomEvent {
    return this.event({ type: 'm.room.power_levels', sender, state_key: '', content });
  }

  joinRules(rule: string, extra: JsonObject = {}): RoomEvent {
    return this.event({
      type: 'm.room.join_rules',
      sender: this.creator,
      state_key: '',
      content: { join_rule: rule, ...extra },
    });
  }

  message(sender: string, type = 'm.room.message', content: JsonObject = { body: 'hi', msgtype: 'm.text' }) {
    return this.event({ type, sender, content });
  }

  /** Puts state events into the current state. */
  apply(...events: RoomEvent[]): this {
    for (const event of events) {
      if (event.state_key === undefined) throw new Error('not a state event');
      this.state.set(stateTuple(event.type, event.state_key), event);
    }
    return this;
  }

  /** Sets a membership directly (as if an earlier event had done it). */
  setMembership(user: string, membership: string): this {
    return this.apply(this.member(user, user, membership));
  }

  check(event: RoomEvent, options?: AuthCheckOptions): AuthResult {
    return checkAuth(event, this.state, this.version, options);
  }
}

/**
 * A room as alice's server would create it: create, alice joined, power levels (alice 100 in v10/v11,
 * where v12 gives her infinite power without listing her; `users` adds to them), join rules.
 */
export function standardRoom(
  versionId: RoomVersionId,
  options: RoomOptions & { joinRule?: string; users?: JsonObject; powerLevels?: JsonObject } = {},
): TestRoom {
  const room = new TestRoom(versionId, options);
  const creator = room.creator;
  room.apply(room.member(creator, creator, 'join'));
  const users: JsonObject = room.v12 ? { ...options.users } : { [creator]: 100, ...options.users };
  room.apply(room.powerLevels(creator, { users, ...options.powerLevels }));
  room.apply(room.joinRules(options.joinRule ?? 'invite'));
  return room;
}

export function allows(t: Test, result: AuthResult, message: string): void {
  t.same(result, { allowed: true }, message);
}

export function refuses(t: Test, result: AuthResult, rule: string, message: string): void {
  t.equal(result.allowed, false, `${message}: refused`);
  t.equal(result.allowed ? undefined : result.rule, rule, `${message}: by rule ${rule}`);
}
