import { sql } from 'kysely';
import type { Executor } from './accounts.repository.ts';
import type { PduRow } from './database.ts';

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
  const servers = new Set<string>();
  for (const r of rows) {
    const server = r.user_id.slice(r.user_id.indexOf(':') + 1);
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

/** Destinations with events not yet acknowledged (to resume after a restart). */
export async function destinationsWithBacklog(db: Executor): Promise<string[]> {
  const rows = await sql<{ destination: string }>`
    select distinct d.destination from federation_destinations d
    join federation_destination_rooms r on r.destination = d.destination
    where r.stream_ordering > coalesce(d.last_successful_stream_ordering, 0)`.execute(db);
  return rows.rows.map((r) => r.destination);
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

/** Whether a user of `server` is joined to the room now. */
export async function serverHasJoinedMember(db: Executor, roomId: string, server: string): Promise<boolean> {
  const row = await db
    .selectFrom('memberships')
    .select('user_id')
    .where('room_id', '=', roomId)
    .where('membership', '=', 'join')
    .where('user_id', 'like', `%:${server.replace(/[\\%_]/g, (c) => `\\${c}`)}`)
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}
