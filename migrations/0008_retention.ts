import { type Kysely, sql } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Retention (spec/retention.md): the purge job looks for a room's events older than a cut-off
 * time. An event's age counts from the earlier of the time its sender's server claims and the
 * time this server received it, so a server cannot keep its events for ever by dating them in
 * the future.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create index pdus_room_age_idx
    on pdus (room_id, (least(origin_server_ts, coalesce(received_ts, origin_server_ts))))`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index pdus_room_age_idx`.execute(db);
}
