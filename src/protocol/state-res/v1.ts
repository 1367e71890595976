/**
 * State resolution v1 (room version 1; rooms: v1.md "State resolution").
 *
 * R starts as the union of the state sets without the conflicting keys (a key held by only some
 * sets, always with the same event, does not conflict). Conflicts are then resolved by kind:
 * power levels, then join rules, then each member key, each from the lowest depth upwards (ties:
 * descending SHA-1 of the event ID), taking the first event and each next one while the
 * authorisation rules allow it in R; every other key takes the event of highest depth (ties:
 * ascending SHA-1) that the rules allow in R, or the lowest if none is allowed. Member keys are
 * resolved each against R as it stands after the join rules, as deployed implementations do.
 */
import { sha1 } from '@noble/hashes/legacy.js';
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js';
import type { RoomEvent, StateTuple } from '../event.ts';
import type { RoomVersion } from '../room-versions.ts';
import {
  authStateFor,
  getEvent,
  isAllowed,
  JOIN_RULES_TUPLE,
  POWER_LEVELS_TUPLE,
  type StateResInput,
} from './common.ts';

/** v1 conflicts: keys whose sets that hold them disagree. */
function splitConflictsV1(stateSets: StateResInput['stateSets']): {
  unconflicted: Map<StateTuple, string>;
  conflicts: Map<StateTuple, Set<string>>;
} {
  const unconflicted = new Map<StateTuple, string>();
  const conflicts = new Map<StateTuple, Set<string>>();
  for (const set of stateSets) {
    for (const [key, id] of set) {
      const conflict = conflicts.get(key);
      if (conflict !== undefined) {
        conflict.add(id);
        continue;
      }
      const held = unconflicted.get(key);
      if (held === undefined) unconflicted.set(key, id);
      else if (held !== id) {
        unconflicted.delete(key);
        conflicts.set(key, new Set([held, id]));
      }
    }
  }
  return { unconflicted, conflicts };
}

/** Sorted by ascending depth, then descending SHA-1 (hex) of the event ID. */
function byDepthAscending(ids: Iterable<string>, events: ReadonlyMap<string, RoomEvent>): RoomEvent[] {
  const keyed = [...ids].map((id) => ({
    event: getEvent(events, id),
    sha: bytesToHex(sha1(utf8ToBytes(id))),
  }));
  keyed.sort((a, b) => {
    if (a.event.depth !== b.event.depth) return a.event.depth - b.event.depth;
    return a.sha < b.sha ? 1 : a.sha > b.sha ? -1 : 0;
  });
  return keyed.map((entry) => entry.event);
}

export function resolveStateV1(roomVersion: RoomVersion, input: StateResInput): Map<StateTuple, string> {
  const { events } = input;
  const { unconflicted, conflicts } = splitConflictsV1(input.stateSets);
  const resolved = new Map(unconflicted);
  const allowedIn = (event: RoomEvent, state: Pick<ReadonlyMap<StateTuple, string>, 'get'>) =>
    isAllowed(
      event,
      authStateFor(event, { state, events, roomVersion, fallBackToAuthEvents: false }),
      roomVersion,
    );

  /** The power levels, join rules and member passes: climb while each next event is allowed. */
  const climb = (key: StateTuple, base: ReadonlyMap<StateTuple, string>): string => {
    const [first, ...others] = byDepthAscending(conflicts.get(key)!, events);
    // R with this key's current pick, without copying R for every key.
    let current = first!.event_id;
    const state = { get: (k: StateTuple) => (k === key ? current : base.get(k)) };
    for (const event of others) {
      if (!allowedIn(event, state)) break;
      current = event.event_id;
    }
    return current;
  };

  if (conflicts.has(POWER_LEVELS_TUPLE))
    resolved.set(POWER_LEVELS_TUPLE, climb(POWER_LEVELS_TUPLE, resolved));
  if (conflicts.has(JOIN_RULES_TUPLE)) resolved.set(JOIN_RULES_TUPLE, climb(JOIN_RULES_TUPLE, resolved));

  const memberKeys = [...conflicts.keys()].filter((key) => key.startsWith('m.room.member\u0000')).sort();
  const afterJoinRules = new Map(resolved);
  for (const key of memberKeys) resolved.set(key, climb(key, afterJoinRules));

  const done = new Set<StateTuple>([POWER_LEVELS_TUPLE, JOIN_RULES_TUPLE, ...memberKeys]);
  const beforeOthers = new Map(resolved);
  for (const [key, ids] of conflicts) {
    if (done.has(key)) continue;
    const candidates = byDepthAscending(ids, events).reverse();
    const chosen = candidates.find((event) => allowedIn(event, beforeOthers)) ?? candidates.at(-1)!;
    resolved.set(key, chosen.event_id);
  }
  return resolved;
}
