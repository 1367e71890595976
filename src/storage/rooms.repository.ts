import { sql } from 'kysely';
import type { RoomEvent, StateTuple } from '../protocol/event.ts';
import { stateTuple } from '../protocol/event.ts';
import type { Executor } from './accounts.repository.ts';
import type { EventRow, RoomRow } from './database.ts';

/** A state group resolved to the event ID of each (type, state_key). */
export type StateIds = Map<StateTuple, string>;

/** Longest chain of delta groups before a full snapshot is written. */
const MAX_CHAIN = 64;

export function findRoom(db: Executor, roomId: string): Promise<RoomRow | undefined> {
  return db.selectFrom('rooms').selectAll().where('room_id', '=', roomId).executeTakeFirst();
}

/** The versions of the rooms among `roomIds` that are held (rooms unknown here are left out). */
export function roomVersionsOf(
  db: Executor,
  roomIds: readonly string[],
): Promise<Array<{ room_id: string; room_version: string }>> {
  if (roomIds.length === 0) return Promise.resolve([]);
  return db.selectFrom('rooms').select(['room_id', 'room_version']).where('room_id', 'in', roomIds).execute();
}

export async function insertRoom(
  db: Executor,
  row: { room_id: string; room_version: string; creator: string; created_ts: number },
): Promise<void> {
  await db.insertInto('rooms').values(row).execute();
}

/** Resolves a state group by walking its chain of deltas (newest entry for a key wins). */
export async function loadStateGroup(db: Executor, groupId: number): Promise<StateIds> {
  const rows = await sql<{ type: string; state_key: string; event_id: string; n: number }>`
    with recursive chain(id, prev, n) as (
      select id, prev_group, 0 from state_groups where id = ${groupId}
      union all
      select g.id, g.prev_group, c.n + 1 from state_groups g join chain c on g.id = c.prev
    )
    select e.type, e.state_key, e.event_id, c.n
    from chain c join state_group_entries e on e.group_id = c.id
    order by c.n desc`.execute(db);
  const state: StateIds = new Map();
  // Oldest first, so newer entries overwrite older ones.
  for (const r of rows.rows) state.set(stateTuple(r.type, r.state_key), r.event_id);
  return state;
}

/**
 * Writes a new state group: `prev` plus `changes`. After MAX_CHAIN deltas the full state is
 * written instead, so resolving a group never walks far.
 */
export async function createStateGroup(
  db: Executor,
  roomId: string,
  prev: { id: number; chainLength: number; state: StateIds } | null,
  changes: Array<{ type: string; state_key: string; event_id: string }>,
): Promise<{ id: number; chainLength: number }> {
  const idRow = await sql<{ id: number }>`select nextval('state_group_seq') as id`.execute(db);
  const id = Number(idRow.rows[0]!.id);
  const snapshot = prev === null || prev.chainLength >= MAX_CHAIN;
  const chainLength = snapshot ? 0 : prev.chainLength + 1;
  await db
    .insertInto('state_groups')
    .values({ id, room_id: roomId, prev_group: snapshot ? null : prev.id, chain_length: chainLength })
    .execute();
  let entries = changes;
  if (snapshot && prev !== null) {
    const full = new Map(prev.state);
    for (const c of changes) full.set(stateTuple(c.type, c.state_key), c.event_id);
    entries = [...full].map(([key, event_id]) => {
      const [type, state_key] = key.split('\u0000') as [string, string];
      return { type, state_key, event_id };
    });
  }
  if (entries.length > 0) {
    await db
      .insertInto('state_group_entries')
      .values(entries.map((e) => ({ group_id: id, ...e })))
      .execute();
  }
  return { id, chainLength };
}

export async function chainLengthOf(db: Executor, groupId: number): Promise<number> {
  const row = await db
    .selectFrom('state_groups')
    .select('chain_length')
    .where('id', '=', groupId)
    .executeTakeFirstOrThrow();
  return row.chain_length;
}

/**
 * Events by ID, as the client side reads them: timeline events, and outliers (the state and auth
 * events a remote join brought, which have no position: they read as position 0 with no state of
 * their own). Rejected and soft-failed events are never returned.
 */
export async function getEventRows(db: Executor, eventIds: readonly string[]): Promise<EventRow[]> {
  if (eventIds.length === 0) return [];
  const rows = await db
    .selectFrom('pdus')
    .select([
      'event_id',
      'room_id',
      'type',
      'state_key',
      'sender',
      'membership',
      'depth',
      'origin_server_ts',
      'json',
      'redacted_by',
      'stream_ordering',
      'state_group_before',
      'state_group_after',
      'room_state_group',
    ])
    .where('event_id', 'in', [...eventIds])
    .where('rejected_reason', 'is', null)
    .where('soft_failed', '=', false)
    .execute();
  return rows.map((r) => ({
    ...r,
    stream_ordering: r.stream_ordering ?? 0,
    state_group_before: r.state_group_before ?? 0,
    state_group_after: r.state_group_after ?? 0,
    room_state_group: r.room_state_group ?? 0,
  }));
}

export async function getEventRow(db: Executor, eventId: string): Promise<EventRow | undefined> {
  return (await getEventRows(db, [eventId]))[0];
}

/** The rows of the room's forward extremities (the events new events point back to). */
export function forwardExtremityRows(db: Executor, roomId: string): Promise<EventRow[]> {
  return db
    .selectFrom('room_forward_extremities as f')
    .innerJoin('events as e', 'e.event_id', 'f.event_id')
    .selectAll('e')
    .where('f.room_id', '=', roomId)
    .execute();
}

export async function setMembership(
  db: Executor,
  row: { room_id: string; user_id: string; membership: string; event_id: string; stream_ordering: number },
): Promise<void> {
  await db
    .insertInto('memberships')
    .values(row)
    .onConflict((c) =>
      c.columns(['room_id', 'user_id']).doUpdateSet({
        membership: row.membership,
        event_id: row.event_id,
        stream_ordering: row.stream_ordering,
        forgotten: false,
      }),
    )
    .execute();
}

export function membershipOf(db: Executor, roomId: string, userId: string) {
  return db
    .selectFrom('memberships')
    .selectAll()
    .where('room_id', '=', roomId)
    .where('user_id', '=', userId)
    .executeTakeFirst();
}

/** Parses a stored event into the PDU shape with its event ID. */
export function toRoomEvent(row: Pick<EventRow, 'event_id' | 'json'>): RoomEvent {
  return { ...(row.json as unknown as RoomEvent), event_id: row.event_id };
}

/**
 * The room's state at `position`: its current state group (resolved across its forward
 * extremities) once the last event at or before `position` was persisted.
 */
export async function stateGroupAtPosition(
  db: Executor,
  roomId: string,
  position: number,
): Promise<number | undefined> {
  const row = await db
    .selectFrom('events')
    .select('room_state_group')
    .where('room_id', '=', roomId)
    .where('stream_ordering', '<=', position)
    .orderBy('stream_ordering', 'desc')
    .limit(1)
    .executeTakeFirst();
  return row?.room_state_group;
}

/** Stream positions of every join of `userId` to the room. */
export async function joinPositions(db: Executor, roomId: string, userId: string): Promise<number[]> {
  const rows = await db
    .selectFrom('events')
    .select('stream_ordering')
    .where('room_id', '=', roomId)
    .where('type', '=', 'm.room.member')
    .where('state_key', '=', userId)
    .where('membership', '=', 'join')
    .execute();
  return rows.map((r) => r.stream_ordering);
}
