import { sql } from 'kysely';
import type { JsonObject } from '../protocol/json.ts';
import type { Executor } from './accounts.repository.ts';
import type { PduRow } from './database.ts';
import { usersSharingRoomNow } from './keys.repository.ts';

/**
 * Outbound federation state: for each destination its backoff and the position of the last event
 * it acknowledged, and for each (destination, room) the newest position the destination must
 * have. What to send is read back from the room's own event order, so no copy of each PDU is kept
 * per destination and a server that was down catches up from where it stopped.
 */

/** The servers of the users joined to the room now (the event's audience), but this one. */
export async function joinedServers(db: Executor, roomId: string, self: string): Promise<string[]> {
  const rows = await db
    .selectFrom('memberships')
    .select('user_id')
    .where('room_id', '=', roomId)
    .where('membership', '=', 'join')
    .execute();
  return otherServers(
    rows.map((r) => r.user_id),
    self,
  );
}

/** The servers of `userIds`, but `self`. */
function otherServers(userIds: readonly string[], self: string): string[] {
  const servers = new Set<string>();
  for (const u of userIds) {
    const server = u.slice(u.indexOf(':') + 1);
    if (server !== self) servers.add(server);
  }
  return [...servers];
}

/** Records that `destination` must get the room's events up to `position`. */
export async function markRoomForDestination(
  db: Executor,
  destination: string,
  roomId: string,
  position: number,
): Promise<void> {
  await db
    .insertInto('federation_destinations')
    .values({
      destination,
      retry_last_ts: null,
      last_success_ts: null,
      last_successful_stream_ordering: position - 1,
    })
    .onConflict((c) => c.column('destination').doNothing())
    .execute();
  await db
    .insertInto('federation_destination_rooms')
    .values({ destination, room_id: roomId, stream_ordering: position, since_stream_ordering: position - 1 })
    .onConflict((c) =>
      c.columns(['destination', 'room_id']).doUpdateSet({
        stream_ordering: sql<number>`greatest(federation_destination_rooms.stream_ordering, excluded.stream_ordering)`,
      }),
    )
    .execute();
}

export function destination(db: Executor, name: string) {
  return db
    .selectFrom('federation_destinations')
    .selectAll()
    .where('destination', '=', name)
    .executeTakeFirst();
}

/**
 * Destinations with events not yet acknowledged, or persistent EDUs queued (to resume after a
 * restart).
 */
export async function destinationsWithBacklog(db: Executor): Promise<string[]> {
  const rows = await sql<{ destination: string }>`
    select d.destination from federation_destinations d
    join federation_destination_rooms r on r.destination = d.destination
    where r.stream_ordering > coalesce(d.last_successful_stream_ordering, 0)
    union
    select destination from federation_queued_edus`.execute(db);
  return rows.rows.map((r) => r.destination);
}

/** Creates the destination's row (for its backoff) when it has none yet. */
export async function ensureDestination(db: Executor, name: string): Promise<void> {
  await db
    .insertInto('federation_destinations')
    .values({
      destination: name,
      retry_last_ts: null,
      last_success_ts: null,
      last_successful_stream_ordering: null,
    })
    .onConflict((c) => c.column('destination').doNothing())
    .execute();
}

/** A persistent EDU waiting for its destination, with its stream ID (rising per destination). */
export interface QueuedEdu {
  id: number;
  edu_type: string;
  content: JsonObject;
}

/**
 * Queues persistent EDUs (to-device messages, device list updates) for `destination`, in the
 * caller's transaction: they are sent in ID order and deleted once the destination acknowledged
 * the transaction that carried them. Returns their stream IDs.
 */
export async function queuePersistentEdus(
  db: Executor,
  destination: string,
  edus: ReadonlyArray<{ edu_type: string; content: JsonObject }>,
  now: number,
): Promise<number[]> {
  if (edus.length === 0) return [];
  const rows = await db
    .insertInto('federation_queued_edus')
    .values(
      edus.map((e) => ({
        destination,
        edu_type: e.edu_type,
        content: JSON.stringify(e.content),
        created_ts: now,
      })),
    )
    .returning('id')
    .execute();
  return rows.map((r) => Number(r.id));
}

/** The oldest persistent EDUs queued for `destination`. */
export async function pendingPersistentEdus(
  db: Executor,
  destination: string,
  limit: number,
): Promise<QueuedEdu[]> {
  const rows = await db
    .selectFrom('federation_queued_edus')
    .select(['id', 'edu_type', 'content'])
    .where('destination', '=', destination)
    .orderBy('id')
    .limit(limit)
    .execute();
  return rows.map((r) => ({ id: Number(r.id), edu_type: r.edu_type, content: r.content }));
}

/** Forgets the persistent EDUs the destination acknowledged. */
export async function deletePersistentEdus(
  db: Executor,
  destination: string,
  ids: readonly number[],
): Promise<void> {
  if (ids.length === 0) return;
  await db
    .deleteFrom('federation_queued_edus')
    .where('destination', '=', destination)
    .where('id', 'in', [...ids])
    .execute();
}

/** The other servers with users joined to a room `userId` is joined to. */
export async function serversSharingARoomWith(db: Executor, userId: string, self: string): Promise<string[]> {
  return otherServers(await usersSharingRoomNow(db, userId), self);
}

/** Whether `userId` is joined to the room now. */
export async function isJoined(db: Executor, roomId: string, userId: string): Promise<boolean> {
  const row = await db
    .selectFrom('memberships')
    .select('membership')
    .where('room_id', '=', roomId)
    .where('user_id', '=', userId)
    .executeTakeFirst();
  return row?.membership === 'join';
}

/** The next events this server sends out that `destination` must get, in stream order. */
export async function pendingEvents(
  db: Executor,
  name: string,
  after: number,
  limit: number,
): Promise<PduRow[]> {
  const rows = await sql<PduRow>`
    select p.* from pdus p
    join federation_destination_rooms r on r.room_id = p.room_id and r.destination = ${name}
    where p.stream_ordering > ${after}
      and p.stream_ordering > r.since_stream_ordering
      and p.stream_ordering <= r.stream_ordering
      and p.outbound
    order by p.stream_ordering
    limit ${limit}`.execute(db);
  return rows.rows.map((r) => ({ ...r, stream_ordering: Number(r.stream_ordering) }));
}

export async function recordSuccess(db: Executor, name: string, upTo: number, now: number): Promise<void> {
  await db
    .updateTable('federation_destinations')
    .set({
      last_successful_stream_ordering: sql<number>`greatest(coalesce(last_successful_stream_ordering, 0), ${upTo})`,
      last_success_ts: now,
      failure_count: 0,
      retry_interval_ms: 0,
      retry_last_ts: null,
    })
    .where('destination', '=', name)
    .execute();
}

export async function recordFailure(
  db: Executor,
  name: string,
  intervalMs: number,
  now: number,
): Promise<void> {
  await db
    .updateTable('federation_destinations')
    .set((eb) => ({
      failure_count: eb('failure_count', '+', 1),
      retry_interval_ms: intervalMs,
      retry_last_ts: now,
    }))
    .where('destination', '=', name)
    .execute();
}

/** Forgets a destination's backoff (it contacted us, so it is up again). */
export async function resetBackoff(db: Executor, name: string): Promise<void> {
  await db
    .updateTable('federation_destinations')
    .set({ retry_interval_ms: 0, retry_last_ts: null })
    .where('destination', '=', name)
    .execute();
}

/** Marks an event as one this server sends to the room's other servers. */
export async function markOutbound(db: Executor, eventId: string): Promise<void> {
  await db.updateTable('pdus').set({ outbound: true }).where('event_id', '=', eventId).execute();
}

/** The answer given to a transaction already received from `origin`, if any. */
export async function receivedTransaction(db: Executor, origin: string, txnId: string) {
  const row = await db
    .selectFrom('federation_received_txns')
    .select('response')
    .where('origin', '=', origin)
    .where('txn_id', '=', txnId)
    .executeTakeFirst();
  return row?.response;
}

export async function recordReceivedTransaction(
  db: Executor,
  row: { origin: string; txn_id: string; response: object; received_ts: number },
): Promise<void> {
  await db
    .insertInto('federation_received_txns')
    .values({ ...row, response: JSON.stringify(row.response) })
    .onConflict((c) => c.doNothing())
    .execute();
}

/** A LIKE pattern matching the user IDs of `server` (its `%`, `_` and `\\` escaped). */
export function usersOfServerPattern(server: string): string {
  return `%:${server.replace(/[\\%_]/g, (c) => `\\${c}`)}`;
}

/** Whether a user of `server` is joined to the room now. */
export async function serverHasJoinedMember(db: Executor, roomId: string, server: string): Promise<boolean> {
  return (await roomsWithJoinedMemberOf(db, [roomId], server)).length > 0;
}

/** Of the rooms, those a user of `server` is joined to now. */
export async function roomsWithJoinedMemberOf(
  db: Executor,
  roomIds: readonly string[],
  server: string,
): Promise<string[]> {
  if (roomIds.length === 0) return [];
  const rows = await db
    .selectFrom('memberships')
    .select('room_id')
    .distinct()
    .where('room_id', 'in', roomIds)
    .where('membership', '=', 'join')
    .where('user_id', 'like', usersOfServerPattern(server))
    .execute();
  return rows.map((r) => r.room_id);
}
