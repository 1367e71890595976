import { selectAuthEvents } from '../protocol/auth-rules.ts';
import { type RoomEvent, type StateMap, type StateTuple, stateTuple } from '../protocol/event.ts';
import type { RoomVersion } from '../protocol/room-versions.ts';
import type { RoomReader } from '../services/room-reads.ts';
import type { Executor } from '../storage/accounts.repository.ts';
import * as store from '../storage/events.repository.ts';
import * as rooms from '../storage/rooms.repository.ts';
import type { RoomLock } from './room-lock.ts';

/**
 * State resolution as the pipeline calls it: pure code over preloaded events
 * (src/protocol/state-res), given every event of the state sets and of their auth chains.
 */
export type StateResolver = (
  rv: RoomVersion,
  input: {
    stateSets: ReadonlyArray<ReadonlyMap<StateTuple, string>>;
    events: ReadonlyMap<string, RoomEvent>;
  },
) => Map<StateTuple, string>;

export interface ResolvedState {
  group: number;
  state: rooms.StateIds;
}

/**
 * The state resolved across several state groups (the state after each prev event, or after each
 * forward extremity). One distinct group is returned as it is; otherwise the resolution is
 * written as a new group.
 */
export async function resolveGroups(
  lock: RoomLock,
  reader: RoomReader,
  resolver: StateResolver,
  rv: RoomVersion,
  groups: readonly number[],
  /** Events not written yet (the one being persisted) that the state sets may name. */
  pending: readonly RoomEvent[] = [],
): Promise<ResolvedState> {
  const distinct = [...new Set(groups)];
  if (distinct.length === 0) throw new Error('resolveGroups needs at least one state group');
  if (distinct.length === 1) {
    return { group: distinct[0]!, state: await reader.stateIdsAt(lock.trx, distinct[0]!) };
  }
  const stateSets = await Promise.all(distinct.map((g) => reader.stateIdsAt(lock.trx, g)));
  const resolved = await resolveStateSets(lock, resolver, rv, stateSets, pending);
  const group = await writeGroup(lock, resolved);
  return { group, state: resolved };
}

/** Loads what the resolver needs (the events of the sets and their auth chains) and runs it. */
export async function resolveStateSets(
  lock: RoomLock,
  resolver: StateResolver,
  rv: RoomVersion,
  stateSets: ReadonlyArray<ReadonlyMap<StateTuple, string>>,
  pending: readonly RoomEvent[] = [],
): Promise<rooms.StateIds> {
  const ids = new Set<string>();
  for (const set of stateSets) for (const id of set.values()) ids.add(id);
  for (const e of pending) for (const id of e.auth_events) ids.add(id);
  for (const id of await store.authChainIds(lock.trx, [...ids])) ids.add(id);
  const events = new Map<string, RoomEvent>(pending.map((e) => [e.event_id, e]));
  const wanted = [...ids].filter((id) => !events.has(id));
  for (const row of await store.getPdus(lock.trx, wanted)) events.set(row.event_id, store.toEvent(row));
  return resolver(rv, { stateSets, events });
}

/** Writes a state map as a new group (a full snapshot: a resolution may drop keys). */
export async function writeGroup(lock: RoomLock, state: rooms.StateIds): Promise<number> {
  const entries = [...state].map(([key, event_id]) => {
    const [type, state_key] = key.split('\u0000') as [string, string];
    return { type, state_key, event_id };
  });
  return (await rooms.createStateGroup(lock.trx, lock.roomId, null, entries)).id;
}

/** The keys whose event differs between two states: what changed and what is gone. */
export function stateDelta(before: rooms.StateIds, after: rooms.StateIds) {
  const changed: Array<{ type: string; state_key: string; event_id: string }> = [];
  const removed: Array<{ type: string; state_key: string }> = [];
  for (const [key, id] of after) {
    if (before.get(key) !== id) {
      const [type, state_key] = key.split('\u0000') as [string, string];
      changed.push({ type, state_key, event_id: id });
    }
  }
  for (const key of before.keys()) {
    if (!after.has(key)) {
      const [type, state_key] = key.split('\u0000') as [string, string];
      removed.push({ type, state_key });
    }
  }
  return { changed, removed };
}

/** Held events by ID: timeline rows through the reader's cache, then any other held row. */
export async function heldEvents(
  trx: Executor,
  reader: RoomReader,
  ids: readonly string[],
): Promise<Map<string, RoomEvent>> {
  const out = new Map<string, RoomEvent>();
  for (const row of (await reader.eventRows(trx, ids, true)).values())
    out.set(row.event_id, rooms.toRoomEvent(row));
  const rest = ids.filter((id) => !out.has(id));
  for (const row of await store.getPdus(trx, rest)) out.set(row.event_id, store.toEvent(row));
  return out;
}

/** The events the auth rules read for `event` (its auth selection and the create event) in `state`. */
export async function authStateAt(
  trx: Executor,
  reader: RoomReader,
  event: Pick<RoomEvent, 'type' | 'sender' | 'state_key' | 'content'>,
  state: rooms.StateIds,
  rv: RoomVersion,
): Promise<StateMap> {
  const keys = selectAuthEvents(event, rv).map((k) => stateTuple(k.type, k.state_key));
  keys.push(stateTuple('m.room.create', ''));
  const ids = keys.map((k) => state.get(k)).filter((id): id is string => id !== undefined);
  const out: StateMap = new Map();
  for (const e of (await heldEvents(trx, reader, ids)).values())
    out.set(stateTuple(e.type, e.state_key ?? ''), e);
  return out;
}
