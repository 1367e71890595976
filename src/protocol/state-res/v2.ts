/**
 * State resolution v2 (room versions 2 to 11; rooms: v2-state-res fragment), and the shared core
 * that v2.1 (v2-1.ts) configures differently.
 */
import type { RoomEvent, StateTuple } from '../event.ts';
import { userPowerLevel } from '../power-levels.ts';
import type { RoomVersion } from '../room-versions.ts';
import {
  authChainIds,
  authEventOfType,
  createEventFor,
  getEvent,
  isPowerEvent,
  iterativeAuthChecks,
  MinHeap,
  POWER_LEVELS_TUPLE,
  type StateResInput,
} from './common.ts';

/** The unconflicted state map and the conflicted state set of v2 (keys missing anywhere conflict). */
export function splitConflicts(stateSets: StateResInput['stateSets']): {
  unconflicted: Map<StateTuple, string>;
  conflicted: Set<string>;
} {
  const unconflicted = new Map<StateTuple, string>();
  const conflicted = new Set<string>();
  const keys = new Set<StateTuple>();
  for (const set of stateSets) for (const key of set.keys()) keys.add(key);
  for (const key of keys) {
    const first = stateSets[0]?.get(key);
    if (first !== undefined && stateSets.every((set) => set.get(key) === first)) {
      unconflicted.set(key, first);
    } else {
      for (const set of stateSets) {
        const id = set.get(key);
        if (id !== undefined) conflicted.add(id);
      }
    }
  }
  return { unconflicted, conflicted };
}

/** The auth difference: events in some but not every state set's full auth chain. */
export function authDifference(input: StateResInput): Set<string> {
  const chains = input.stateSets.map((set) => authChainIds(set.values(), input.events));
  const difference = new Set<string>();
  for (const chain of chains) {
    for (const id of chain) {
      if (!chains.every((other) => other.has(id))) difference.add(id);
    }
  }
  return difference;
}

/** Ordering key shared by both sorts: a rank (lower sorts first), then origin_server_ts, then event ID. */
interface SortKey {
  rank: number;
  ts: number;
  id: string;
}

function keyLess(a: SortKey, b: SortKey): boolean {
  if (a.rank !== b.rank) return a.rank < b.rank;
  if (a.ts !== b.ts) return a.ts < b.ts;
  return a.id < b.id;
}

/** The sender's power level, read from the event's own auth events (and, in v12, its room's create event). */
function senderPowerLevel(
  event: RoomEvent,
  events: ReadonlyMap<string, RoomEvent>,
  roomVersion: RoomVersion,
): number {
  const powerLevels = authEventOfType(event, events, 'm.room.power_levels');
  const create = createEventFor(event, events, roomVersion);
  return userPowerLevel(event.sender, powerLevels, create, roomVersion);
}

/**
 * The reverse topological power ordering of `start` and the events of their auth chains that are in
 * `within` (the full conflicted set): Kahn's algorithm over the auth-event edges, always taking the
 * candidate whose sender has the highest power level, then the earliest origin_server_ts, then the
 * smallest event ID. As deployed implementations do, the graph follows auth edges only while they
 * stay inside `within`.
 */
export function reverseTopologicalPowerSort(
  start: Iterable<string>,
  within: ReadonlySet<string>,
  events: ReadonlyMap<string, RoomEvent>,
  roomVersion: RoomVersion,
): RoomEvent[] {
  // Edges from each event to its auth events in the graph.
  const edges = new Map<string, string[]>();
  const stack = [...start];
  for (let id = stack.pop(); id !== undefined; id = stack.pop()) {
    if (edges.has(id)) continue;
    const inGraph = getEvent(events, id).auth_events.filter((authId) => within.has(authId));
    edges.set(id, inGraph);
    for (const authId of inGraph) if (!edges.has(authId)) stack.push(authId);
  }

  const pending = new Map<string, number>();
  const dependents = new Map<string, string[]>();
  for (const [id, authIds] of edges) {
    pending.set(id, new Set(authIds).size);
    for (const authId of new Set(authIds)) {
      const list = dependents.get(authId);
      if (list === undefined) dependents.set(authId, [id]);
      else list.push(id);
    }
  }

  const keys = new Map<string, SortKey>();
  for (const id of edges.keys()) {
    const event = getEvent(events, id);
    keys.set(id, { rank: -senderPowerLevel(event, events, roomVersion), ts: event.origin_server_ts, id });
  }
  const heap = new MinHeap<SortKey>(keyLess);
  for (const [id, count] of pending) if (count === 0) heap.push(keys.get(id)!);
  const sorted: RoomEvent[] = [];
  for (let next = heap.pop(); next !== undefined; next = heap.pop()) {
    sorted.push(getEvent(events, next.id));
    for (const dependent of dependents.get(next.id) ?? []) {
      const left = pending.get(dependent)! - 1;
      pending.set(dependent, left);
      if (left === 0) heap.push(keys.get(dependent)!);
    }
  }
  return sorted;
}

/**
 * The mainline ordering based on the power levels event `powerLevelsId` (v2 "Mainline ordering"):
 * events whose power levels chain meets the mainline earlier sort first, then by
 * origin_server_ts, then by event ID.
 */
export function mainlineSort(
  ids: Iterable<string>,
  powerLevelsId: string | undefined,
  events: ReadonlyMap<string, RoomEvent>,
): RoomEvent[] {
  const powerLevelsOf = (event: RoomEvent) => authEventOfType(event, events, 'm.room.power_levels');
  const mainline = new Map<string, number>();
  let position = 0;
  for (
    let p = powerLevelsId === undefined ? undefined : getEvent(events, powerLevelsId);
    p;
    p = powerLevelsOf(p)
  ) {
    if (mainline.has(p.event_id)) break;
    mainline.set(p.event_id, position++);
  }
  // Mainline position of each power levels event met on the way (memoised: chains are shared).
  const positions = new Map<string, number>(mainline);
  const positionFrom = (first: RoomEvent | undefined): number => {
    const walked: string[] = [];
    let found = Infinity;
    for (let p = first; p; p = powerLevelsOf(p)) {
      const known = positions.get(p.event_id);
      if (known !== undefined) {
        found = known;
        break;
      }
      walked.push(p.event_id);
    }
    for (const id of walked) positions.set(id, found);
    return found;
  };

  const keyed = [...ids].map((id) => {
    const event = getEvent(events, id);
    // A greater mainline position sorts first, so the rank is its negation.
    return { event, key: { rank: -positionFrom(powerLevelsOf(event)), ts: event.origin_server_ts, id } };
  });
  keyed.sort((a, b) => (keyLess(a.key, b.key) ? -1 : keyLess(b.key, a.key) ? 1 : 0));
  return keyed.map((entry) => entry.event);
}

export interface V2Variant {
  /** v2.1: also the conflicted state subgraph in the full conflicted set. */
  conflictedSubgraph?: (
    conflicted: ReadonlySet<string>,
    events: ReadonlyMap<string, RoomEvent>,
  ) => Set<string>;
  /** v2.1: the first iterative auth checks start from the empty state, not the unconflicted state. */
  startFromEmpty: boolean;
}

/** The v2 algorithm ("Algorithm", steps 1 to 5), configured for v2 or v2.1. */
export function resolveV2Family(
  roomVersion: RoomVersion,
  input: StateResInput,
  variant: V2Variant,
): Map<StateTuple, string> {
  const { events } = input;
  const { unconflicted, conflicted } = splitConflicts(input.stateSets);
  if (conflicted.size === 0) return unconflicted;

  const full = new Set(conflicted);
  for (const id of authDifference(input)) full.add(id);
  if (variant.conflictedSubgraph)
    for (const id of variant.conflictedSubgraph(conflicted, events)) full.add(id);

  // Step 1: the power events of the full conflicted set with their auth chains inside it.
  const powerIds = [...full].filter((id) => isPowerEvent(getEvent(events, id)));
  const powerSorted = reverseTopologicalPowerSort(powerIds, full, events, roomVersion);

  // Step 2.
  const start = variant.startFromEmpty ? new Map<StateTuple, string>() : unconflicted;
  const partial = iterativeAuthChecks(powerSorted, start, events, roomVersion, input.rejected);

  // Step 3: everything else, in mainline order of the partially resolved power levels.
  const picked = new Set(powerSorted.map((event) => event.event_id));
  const rest = [...full].filter((id) => !picked.has(id));
  const restSorted = mainlineSort(rest, partial.get(POWER_LEVELS_TUPLE), events);

  // Step 4.
  const resolved = iterativeAuthChecks(restSorted, partial, events, roomVersion, input.rejected);

  // Step 5: the unconflicted state wins.
  for (const [key, id] of unconflicted) resolved.set(key, id);
  return resolved;
}

/** State resolution v2 (room versions 2 to 11). */
export function resolveStateV2(roomVersion: RoomVersion, input: StateResInput): Map<StateTuple, string> {
  return resolveV2Family(roomVersion, input, { startFromEmpty: false });
}
