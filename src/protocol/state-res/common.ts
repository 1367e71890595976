/**
 * Shared pieces of the state resolution algorithms (rooms: v1.md, v2-state-res fragment, v12.md):
 * the input and error types, auth chains, the split into unconflicted and conflicted state, the
 * auth state an event is checked against, and the iterative auth checks.
 *
 * Everything is pure and synchronous: the caller preloads every event the algorithm may look at.
 * The authorisation rules themselves are `checkAuth` from auth-rules.ts; nothing here repeats them.
 */
import { type AuthCheckOptions, checkAuth, createEventIdForRoomId, selectAuthEvents } from '../auth-rules.ts';
import { decodeBase64, decodeBase64Url } from '../base64.ts';
import { type RoomEvent, type StateMap, type StateTuple, stateTuple } from '../event.ts';
import { isJsonObject, type JsonObject } from '../json.ts';
import type { RoomVersion } from '../room-versions.ts';
import { verifyJsonSignature } from '../signing.ts';

export interface StateResInput {
  /** The state sets to resolve (e.g. the state after each prev_event), type+state_key -> event ID. */
  stateSets: ReadonlyArray<ReadonlyMap<StateTuple, string>>;
  /** Every event named in the state sets and every event of their auth chains. */
  events: ReadonlyMap<string, RoomEvent>;
  /**
   * Optional: IDs of events that were rejected. The iterative auth checks do not fall back on a
   * rejected auth event (v2 "Iterative auth checks"). Absent means none was rejected.
   */
  rejected?: ReadonlySet<string>;
}

/** State resolution could not run, e.g. a needed event is missing from `events`. */
export class StateResError extends Error {
  override name = 'StateResError';
}

export const CREATE_TUPLE = stateTuple('m.room.create', '');
export const POWER_LEVELS_TUPLE = stateTuple('m.room.power_levels', '');
export const JOIN_RULES_TUPLE = stateTuple('m.room.join_rules', '');

export function getEvent(events: ReadonlyMap<string, RoomEvent>, id: string): RoomEvent {
  const event = events.get(id);
  if (event === undefined)
    throw new StateResError(`event ${id} is not among the events given to state resolution`);
  return event;
}

/** The (type, state_key) of a state event; throws for a message event. */
export function tupleOf(event: RoomEvent): StateTuple {
  if (typeof event.state_key !== 'string') {
    throw new StateResError(`event ${event.event_id} in a state set is not a state event`);
  }
  return stateTuple(event.type, event.state_key);
}

/** The IDs of the full auth chain of the given events (not including them), from `events`. */
export function authChainIds(ids: Iterable<string>, events: ReadonlyMap<string, RoomEvent>): Set<string> {
  const chain = new Set<string>();
  const stack: string[] = [];
  const visit = (id: string) => {
    for (const authId of getEvent(events, id).auth_events) {
      if (!chain.has(authId)) {
        chain.add(authId);
        stack.push(authId);
      }
    }
  };
  for (const id of ids) visit(id);
  for (let id = stack.pop(); id !== undefined; id = stack.pop()) visit(id);
  return chain;
}

/**
 * Power events (v2 "Definitions"): power levels, join rules, and kicks and bans (a leave or ban
 * whose sender is not its target). The create event is counted too, as deployed implementations
 * do; it can only be conflicted in a malformed room.
 */
export function isPowerEvent(event: RoomEvent): boolean {
  if (
    event.state_key === '' &&
    (event.type === 'm.room.power_levels' || event.type === 'm.room.join_rules')
  ) {
    return true;
  }
  if (event.state_key === '' && event.type === 'm.room.create') return true;
  if (event.type === 'm.room.member' && typeof event.state_key === 'string') {
    const membership = event.content.membership;
    return (membership === 'leave' || membership === 'ban') && event.sender !== event.state_key;
  }
  return false;
}

/** The room's create event as `event` names it: its auth events, or (v12) its room ID. */
export function createEventFor(
  event: RoomEvent,
  events: ReadonlyMap<string, RoomEvent>,
  roomVersion: RoomVersion,
): RoomEvent | undefined {
  if (roomVersion.roomIdFromCreateEvent) {
    if (typeof event.room_id !== 'string') return undefined;
    return getEvent(events, createEventIdForRoomId(event.room_id));
  }
  return authEventOfType(event, events, 'm.room.create');
}

/** The auth event of `event` with this type and an empty state key. */
export function authEventOfType(
  event: RoomEvent,
  events: ReadonlyMap<string, RoomEvent>,
  type: string,
): RoomEvent | undefined {
  for (const id of event.auth_events) {
    const authEvent = getEvent(events, id);
    if (authEvent.type === type && authEvent.state_key === '') return authEvent;
  }
  return undefined;
}

/**
 * A third-party invite's `signed` object is valid if any of its signatures verifies under the
 * public key (standard or URL-safe unpadded base64) of the `m.room.third_party_invite` event.
 */
function verifyThirdPartySigned(signed: JsonObject, publicKey: string): boolean {
  let key: Uint8Array;
  try {
    key = decodeBase64(publicKey);
  } catch {
    try {
      key = decodeBase64Url(publicKey);
    } catch {
      return false;
    }
  }
  const signatures = signed.signatures;
  if (!isJsonObject(signatures)) return false;
  for (const [server, byKey] of Object.entries(signatures)) {
    if (!isJsonObject(byKey)) continue;
    for (const keyId of Object.keys(byKey)) {
      if (verifyJsonSignature(signed, server, keyId, key)) return true;
    }
  }
  return false;
}

/**
 * Options for `checkAuth` during state resolution. Events reach state resolution only after their
 * signatures were checked on receipt, so the authorising server's signature (restricted joins) is
 * taken as checked; third-party invite signatures depend on the key in the state and are verified.
 */
export const STATE_RES_AUTH_OPTIONS: AuthCheckOptions = Object.freeze({
  verifyEventSignature: () => true,
  verifyThirdPartyInviteSignature: verifyThirdPartySigned,
});

export interface AuthStateSource {
  /** The state resolved so far (only looked up). */
  state: Pick<ReadonlyMap<StateTuple, string>, 'get'>;
  events: ReadonlyMap<string, RoomEvent>;
  roomVersion: RoomVersion;
  /** Fill keys missing from `state` with the event's own (non-rejected) auth events (v2). */
  fallBackToAuthEvents: boolean;
  rejected?: ReadonlySet<string> | undefined;
}

/**
 * The state `event` is checked against: for every key the auth events selection picks (and the
 * create event), the event from the resolved state; where the resolved state has none, the
 * event's own auth event for that key, unless that was rejected.
 */
export function authStateFor(event: RoomEvent, source: AuthStateSource): StateMap {
  const { state, events, roomVersion } = source;
  const authState: StateMap = new Map();
  if (source.fallBackToAuthEvents) {
    for (const id of event.auth_events) {
      if (source.rejected?.has(id)) continue;
      const authEvent = getEvent(events, id);
      if (typeof authEvent.state_key === 'string') authState.set(tupleOf(authEvent), authEvent);
    }
    if (roomVersion.roomIdFromCreateEvent && !authState.has(CREATE_TUPLE)) {
      const create = createEventFor(event, events, roomVersion);
      if (create !== undefined) authState.set(CREATE_TUPLE, create);
    }
  }
  const wanted = selectAuthEvents(event, roomVersion).map((pair) => stateTuple(pair.type, pair.state_key));
  wanted.push(CREATE_TUPLE);
  for (const key of wanted) {
    const id = state.get(key);
    if (id !== undefined) authState.set(key, getEvent(events, id));
  }
  return authState;
}

/** Whether `event` passes the authorisation rules against `authState`. */
export function isAllowed(event: RoomEvent, authState: StateMap, roomVersion: RoomVersion): boolean {
  return checkAuth(event, authState, roomVersion, STATE_RES_AUTH_OPTIONS).allowed;
}

/**
 * The iterative auth checks (v2 "Definitions"): apply each event, in order, to the state if the
 * authorisation rules allow it against that state; otherwise skip it. Returns a new map.
 */
export function iterativeAuthChecks(
  ordered: readonly RoomEvent[],
  initial: ReadonlyMap<StateTuple, string>,
  events: ReadonlyMap<string, RoomEvent>,
  roomVersion: RoomVersion,
  rejected: ReadonlySet<string> | undefined,
): Map<StateTuple, string> {
  const state = new Map(initial);
  const source: AuthStateSource = { state, events, roomVersion, fallBackToAuthEvents: true, rejected };
  for (const event of ordered) {
    if (typeof event.state_key !== 'string') continue;
    if (isAllowed(event, authStateFor(event, source), roomVersion)) state.set(tupleOf(event), event.event_id);
  }
  return state;
}

/** Every event ID named in any state set. */
export function stateSetEventIds(stateSets: StateResInput['stateSets']): Set<string> {
  const ids = new Set<string>();
  for (const set of stateSets) for (const id of set.values()) ids.add(id);
  return ids;
}

/** A binary min-heap under `less`. */
export class MinHeap<T> {
  private readonly items: T[] = [];

  constructor(private readonly less: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.items.length;
  }

  push(item: T): void {
    const items = this.items;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  pop(): T | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last !== undefined) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < items.length && this.less(items[left]!, items[smallest]!)) smallest = left;
        if (right < items.length && this.less(items[right]!, items[smallest]!)) smallest = right;
        if (smallest === i) break;
        [items[i], items[smallest]] = [items[smallest]!, items[i]!];
        i = smallest;
      }
    }
    return top;
  }
}
