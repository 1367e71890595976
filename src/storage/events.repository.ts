import { sql } from 'kysely';
import type { RoomEvent } from '../protocol/event.ts';
import type { JsonObject } from '../protocol/json.ts';
import type { Executor } from './accounts.repository.ts';
import type { PduRow } from './database.ts';
import { unindexEvent } from './search.repository.ts';

/**
 * The federated event store: every event held (`pdus`), its edges, and the room's forward and
 * backward extremities. The timeline reads go through the `events` view (rooms.repository.ts).
 */

export interface NewPdu {
  event: RoomEvent;
  roomId: string;
  origin: string;
  receivedTs: number;
  /** Null for outliers, rejected and soft-failed events. */
  streamOrdering: number | null;
  stateGroupBefore: number | null;
  stateGroupAfter: number | null;
  roomStateGroup: number | null;
  outlier: boolean;
  rejectedReason: string | null;
  softFailed: boolean;
  outbound: boolean;
  redacts: string | null;
}

/**
 * Writes an event with its prev and auth edges. An outlier already held is upgraded in place (it
 * gains its position and state); any other event already held is left as it is.
 */
export async function insertPdu(db: Executor, p: NewPdu): Promise<void> {
  const { event_id: _id, ...json } = p.event;
  const e = p.event;
  const row = {
    event_id: e.event_id,
    room_id: p.roomId,
    type: e.type,
    state_key: e.state_key ?? null,
    sender: e.sender,
    membership:
      e.type === 'm.room.member' && typeof e.content.membership === 'string' ? e.content.membership : null,
    depth: e.depth,
    origin_server_ts: e.origin_server_ts,
    json: JSON.stringify(json),
    stream_ordering: p.streamOrdering,
    state_group_before: p.stateGroupBefore,
    state_group_after: p.stateGroupAfter,
    room_state_group: p.roomStateGroup,
    outlier: p.outlier,
    rejected_reason: p.rejectedReason,
    soft_failed: p.softFailed,
    outbound: p.outbound,
    origin: p.origin,
    received_ts: p.receivedTs,
    redacts: p.redacts,
    redacted_by: null,
  };
  await db
    .insertInto('pdus')
    .values(row)
    .onConflict((c) =>
      c
        .column('event_id')
        .doUpdateSet({
          stream_ordering: row.stream_ordering,
          state_group_before: row.state_group_before,
          state_group_after: row.state_group_after,
          room_state_group: row.room_state_group,
          outlier: row.outlier,
          rejected_reason: row.rejected_reason,
          soft_failed: row.soft_failed,
          outbound: row.outbound,
        })
        .where('pdus.outlier', '=', true),
    )
    .execute();
  // Both edge lists in one statement (one round trip; an empty list inserts nothing).
  if (e.prev_events.length > 0 || e.auth_events.length > 0) {
    await sql`
      with prev_edges as (
        insert into event_edges (event_id, prev_event_id, room_id)
        select ${e.event_id}, prev, ${p.roomId} from unnest(${e.prev_events}::text[]) as prev
        on conflict do nothing)
      insert into event_auth_edges (event_id, auth_event_id)
      select ${e.event_id}, auth from unnest(${e.auth_events}::text[]) as auth
      on conflict do nothing`.execute(db);
  }
}

export function getPdus(db: Executor, ids: readonly string[]): Promise<PduRow[]> {
  if (ids.length === 0) return Promise.resolve([]);
  return db
    .selectFrom('pdus')
    .selectAll()
    .where('event_id', 'in', [...ids])
    .execute();
}

export function toEvent(row: Pick<PduRow, 'event_id' | 'json'>): RoomEvent {
  return { ...(row.json as unknown as RoomEvent), event_id: row.event_id };
}

/**
 * The IDs of every event in the auth chains of `ids` (not including them), following the stored
 * auth edges. Events not held end their branch of the walk.
 */
export async function authChainIds(db: Executor, ids: readonly string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const rows = await sql<{ id: string }>`
    with recursive chain(id) as (
      select auth_event_id from event_auth_edges where event_id in (${sql.join([...ids])})
      union
      select a.auth_event_id from event_auth_edges a join chain c on a.event_id = c.id
    )
    select id from chain`.execute(db);
  return rows.rows.map((r) => r.id);
}

export async function forwardExtremityIds(db: Executor, roomId: string): Promise<string[]> {
  const rows = await db
    .selectFrom('room_forward_extremities')
    .select('event_id')
    .where('room_id', '=', roomId)
    .execute();
  return rows.map((r) => r.event_id);
}

/** Whether a timeline event already points back to `eventId` (which then arrived late). */
export async function hasSuccessor(db: Executor, eventId: string): Promise<boolean> {
  const row = await db
    .selectFrom('event_edges')
    .innerJoin('pdus', 'pdus.event_id', 'event_edges.event_id')
    .select('event_edges.event_id')
    .where('event_edges.prev_event_id', '=', eventId)
    .where('pdus.stream_ordering', 'is not', null)
    .executeTakeFirst();
  return row !== undefined;
}

/**
 * Removes the given prev events from the room's forward extremities (only those: other forks
 * stay) and adds `eventId` when given. One statement.
 */
export async function setForwardExtremities(
  db: Executor,
  roomId: string,
  prevEventIds: readonly string[],
  eventId: string | undefined,
): Promise<void> {
  const prevs = prevEventIds.length > 0 ? prevEventIds : [''];
  if (eventId === undefined) {
    await db
      .deleteFrom('room_forward_extremities')
      .where('room_id', '=', roomId)
      .where('event_id', 'in', [...prevs])
      .execute();
    return;
  }
  await sql`
    with gone as (
      delete from room_forward_extremities
      where room_id = ${roomId} and event_id in (${sql.join([...prevs])}))
    insert into room_forward_extremities (room_id, event_id) values (${roomId}, ${eventId})
    on conflict do nothing`.execute(db);
}

/** Backward extremities: prev events not held, where backfill starts. */
export async function updateBackwardExtremities(
  db: Executor,
  roomId: string,
  eventId: string,
  missingPrevIds: readonly string[],
): Promise<void> {
  await db
    .deleteFrom('room_backward_extremities')
    .where('room_id', '=', roomId)
    .where('event_id', '=', eventId)
    .execute();
  if (missingPrevIds.length > 0) {
    await db
      .insertInto('room_backward_extremities')
      .values(missingPrevIds.map((id) => ({ room_id: roomId, event_id: id })))
      .onConflict((c) => c.doNothing())
      .execute();
  }
}

/** Senders of up to `limit` held events of the room whose prev events include one of `eventIds`. */
export async function sendersPointingAt(
  db: Executor,
  roomId: string,
  eventIds: readonly string[],
  limit: number,
): Promise<string[]> {
  if (eventIds.length === 0) return [];
  const rows = await db
    .selectFrom('event_edges')
    .innerJoin('pdus', 'pdus.event_id', 'event_edges.event_id')
    .select('pdus.sender')
    .where('event_edges.room_id', '=', roomId)
    .where('event_edges.prev_event_id', 'in', eventIds)
    .limit(limit)
    .execute();
  return rows.map((r) => r.sender);
}

export async function backwardExtremityIds(db: Executor, roomId: string): Promise<string[]> {
  const rows = await db
    .selectFrom('room_backward_extremities')
    .select('event_id')
    .where('room_id', '=', roomId)
    .execute();
  return rows.map((r) => r.event_id);
}

/** Redactions held that name `targetId` (a redaction may arrive before its target). */
export function redactionsOf(db: Executor, targetId: string): Promise<PduRow[]> {
  return db
    .selectFrom('pdus')
    .selectAll()
    .where('redacts', '=', targetId)
    .where('rejected_reason', 'is', null)
    .where('soft_failed', '=', false)
    .execute();
}

export async function markRedacted(db: Executor, targetId: string, redactionId: string): Promise<void> {
  await db
    .updateTable('pdus')
    .set({ redacted_by: redactionId })
    .where('event_id', '=', targetId)
    .where('redacted_by', 'is', null)
    .execute();
  // A redacted event's text leaves the search index (spec/search.md).
  await unindexEvent(db, targetId);
}

export async function setRoomCurrentStateGroup(db: Executor, roomId: string, group: number): Promise<void> {
  await db.updateTable('rooms').set({ current_state_group: group }).where('room_id', '=', roomId).execute();
}

/**
 * A room's current state group and forward extremities in one query; undefined for a room not
 * held.
 */
export async function roomHead(
  db: Executor,
  roomId: string,
): Promise<{ currentGroup: number | undefined; extremities: PduRow[] } | undefined> {
  const rows = await db
    .selectFrom('rooms as r')
    .leftJoin('room_forward_extremities as f', 'f.room_id', 'r.room_id')
    .leftJoin('pdus as p', 'p.event_id', 'f.event_id')
    .select('r.current_state_group')
    .selectAll('p')
    .where('r.room_id', '=', roomId)
    .execute();
  const first = rows[0];
  if (!first) return undefined;
  const extremities: PduRow[] = [];
  for (const { current_state_group: _group, ...row } of rows) {
    if (row.event_id !== null) extremities.push(row as PduRow);
  }
  return { currentGroup: first.current_state_group ?? undefined, extremities };
}

export async function roomCurrentStateGroup(db: Executor, roomId: string): Promise<number | undefined> {
  const row = await db
    .selectFrom('rooms')
    .select('current_state_group')
    .where('room_id', '=', roomId)
    .executeTakeFirst();
  return row?.current_state_group ?? undefined;
}

/** Replaces the current-state rows of the given keys (a computed delta, not the whole state). */
export async function applyCurrentStateDelta(
  db: Executor,
  roomId: string,
  changed: ReadonlyArray<{ type: string; state_key: string; event_id: string }>,
  removed: ReadonlyArray<{ type: string; state_key: string }>,
): Promise<void> {
  for (const r of removed) {
    await db
      .deleteFrom('current_state')
      .where('room_id', '=', roomId)
      .where('type', '=', r.type)
      .where('state_key', '=', r.state_key)
      .execute();
  }
  if (changed.length > 0) {
    await db
      .insertInto('current_state')
      .values(changed.map((c) => ({ room_id: roomId, ...c })))
      .onConflict((c) =>
        c
          .columns(['room_id', 'type', 'state_key'])
          .doUpdateSet((eb) => ({ event_id: eb.ref('excluded.event_id') })),
      )
      .execute();
  }
}

export function jsonOf(row: Pick<PduRow, 'json'>): JsonObject {
  return row.json as JsonObject;
}
