import { type Kysely, sql } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * The store for a federated room graph.
 *
 * Every event this server knows of now lives in `pdus`, keyed by event ID: timeline events (a
 * stream position and the state before and after them), outliers (known only for their own sake,
 * e.g. auth events and the state fetched when joining: no position, no state), rejected events
 * (failed the authorization rules: kept with the reason, never served) and soft-failed events
 * (passed against the state before them but not against the current state: kept, with state, so
 * later events may point at them, never delivered to clients). The view `events` is the timeline:
 * rows with a stream position, which is what every client-facing read wants; it is a simple view,
 * so updates through it (redaction marks) reach `pdus`.
 *
 * Backfilled events (older than anything the server had) take positions below zero from their own
 * descending sequence, so ordering by position places them before the room's known history while
 * incremental sync (which reads above a non-negative token) never sees them as new.
 *
 * Also: the prev and auth edges of every event, the room's backward extremities (prev events not
 * held, where backfill starts), the current state group of each room (resolved across its forward
 * extremities), per-destination delivery state for outbound federation (a catch-up position per
 * room rather than a copy of every PDU), queued EDUs, and received transaction IDs.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table events rename to pdus`.execute(db);
  await sql`alter table pdus drop constraint events_pkey`.execute(db);
  await sql`alter table pdus drop constraint events_event_id_key`.execute(db);
  await sql`alter table pdus add constraint pdus_pkey primary key (event_id)`.execute(db);
  await sql`alter table pdus alter column stream_ordering drop not null`.execute(db);
  await sql`alter table pdus alter column state_group_before drop not null`.execute(db);
  await sql`alter table pdus alter column state_group_after drop not null`.execute(db);
  await sql`create unique index pdus_stream_ordering_idx on pdus (stream_ordering)`.execute(db);
  await sql`alter table pdus add column outlier boolean not null default false`.execute(db);
  await sql`alter table pdus add column rejected_reason text`.execute(db);
  await sql`alter table pdus add column soft_failed boolean not null default false`.execute(db);
  // The server the event came from (ours for local events): for logs and hostile-server audits.
  await sql`alter table pdus add column origin text`.execute(db);
  await sql`alter table pdus add column received_ts bigint`.execute(db);
  // Whether this server sends the event to the room's other servers: its own events, and the
  // membership events it accepted through send_join, send_leave and send_knock.
  await sql`alter table pdus add column outbound boolean not null default false`.execute(db);
  await sql`update pdus set outbound = true`.execute(db);
  // For m.room.redaction: the event it names (a redaction may arrive before its target).
  await sql`alter table pdus add column redacts text`.execute(db);
  await sql`create index pdus_redacts_idx on pdus (redacts) where redacts is not null`.execute(db);
  // For timeline events: the room's current state group once the event was persisted (the state
  // resolved across the forward extremities), which is what "the room's state at position N" is.
  await sql`alter table pdus add column room_state_group bigint`.execute(db);
  await sql`update pdus set room_state_group = state_group_after`.execute(db);
  await sql`
    update pdus set redacts = coalesce(json->>'redacts', json->'content'->>'redacts')
    where type = 'm.room.redaction'`.execute(db);
  await sql`alter index events_room_idx rename to pdus_room_stream_idx`.execute(db);
  await sql`create index pdus_room_depth_idx on pdus (room_id, depth)`.execute(db);

  await sql`
    create view events as
      select stream_ordering, event_id, room_id, type, state_key, sender, membership, depth,
             origin_server_ts, state_group_before, state_group_after, room_state_group, json,
             redacted_by
      from pdus
      where stream_ordering is not null`.execute(db);

  await sql`create sequence backfill_ordering_seq increment by -1 start with -1 maxvalue -1`.execute(db);

  await db.schema
    .createTable('event_edges')
    .addColumn('event_id', 'text', (c) => c.notNull())
    .addColumn('prev_event_id', 'text', (c) => c.notNull())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('event_edges_pkey', ['event_id', 'prev_event_id'])
    .execute();
  await db.schema.createIndex('event_edges_prev_idx').on('event_edges').column('prev_event_id').execute();
  await db.schema
    .createTable('event_auth_edges')
    .addColumn('event_id', 'text', (c) => c.notNull())
    .addColumn('auth_event_id', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('event_auth_edges_pkey', ['event_id', 'auth_event_id'])
    .execute();
  // Edges of the events already stored (all local, no forks yet).
  await sql`
    insert into event_edges (event_id, prev_event_id, room_id)
      select p.event_id, prev.value, p.room_id
      from pdus p, jsonb_array_elements_text(p.json->'prev_events') as prev(value)
    on conflict do nothing`.execute(db);
  await sql`
    insert into event_auth_edges (event_id, auth_event_id)
      select p.event_id, a.value
      from pdus p, jsonb_array_elements_text(p.json->'auth_events') as a(value)
    on conflict do nothing`.execute(db);

  await db.schema
    .createTable('room_backward_extremities')
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('event_id', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('room_backward_extremities_pkey', ['room_id', 'event_id'])
    .execute();

  await sql`alter table rooms add column current_state_group bigint`.execute(db);
  await sql`
    update rooms r set current_state_group = (
      select p.state_group_after from room_forward_extremities f
      join pdus p on p.event_id = f.event_id
      where f.room_id = r.room_id order by p.stream_ordering desc limit 1)`.execute(db);

  // Outbound federation: one row per destination (backoff), and per (destination, room) the
  // position of the newest event of that room the destination must have.
  await db.schema
    .createTable('federation_destinations')
    .addColumn('destination', 'text', (c) => c.primaryKey())
    .addColumn('retry_last_ts', 'bigint')
    .addColumn('retry_interval_ms', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('failure_count', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('last_success_ts', 'bigint')
    .addColumn('last_successful_stream_ordering', 'bigint')
    .execute();
  await db.schema
    .createTable('federation_destination_rooms')
    .addColumn('destination', 'text', (c) => c.notNull())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('stream_ordering', 'bigint', (c) => c.notNull())
    // Only events after this position are sent: a server that joins late gets no earlier history
    // pushed (it may backfill what the room's history visibility lets it see).
    .addColumn('since_stream_ordering', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('federation_destination_rooms_pkey', ['destination', 'room_id'])
    .execute();
  await db.schema
    .createTable('federation_queued_edus')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('destination', 'text', (c) => c.notNull())
    .addColumn('edu_type', 'text', (c) => c.notNull())
    .addColumn('content', 'jsonb', (c) => c.notNull())
    .addColumn('created_ts', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('federation_queued_edus_destination_idx')
    .on('federation_queued_edus')
    .columns(['destination', 'id'])
    .execute();

  // Inbound: a transaction ID is processed once per origin; a retry gets the first answer.
  await db.schema
    .createTable('federation_received_txns')
    .addColumn('origin', 'text', (c) => c.notNull())
    .addColumn('txn_id', 'text', (c) => c.notNull())
    .addColumn('response', 'jsonb', (c) => c.notNull())
    .addColumn('received_ts', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('federation_received_txns_pkey', ['origin', 'txn_id'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const table of [
    'federation_received_txns',
    'federation_queued_edus',
    'federation_destination_rooms',
    'federation_destinations',
    'room_backward_extremities',
    'event_auth_edges',
    'event_edges',
  ]) {
    await db.schema.dropTable(table).execute();
  }
  await sql`alter table rooms drop column current_state_group`.execute(db);
  await sql`drop sequence backfill_ordering_seq`.execute(db);
  await sql`drop view events`.execute(db);
  await sql`delete from pdus where stream_ordering is null`.execute(db);
  for (const column of [
    'outlier',
    'rejected_reason',
    'soft_failed',
    'origin',
    'received_ts',
    'outbound',
    'redacts',
    'room_state_group',
  ]) {
    await sql`alter table pdus drop column ${sql.ref(column)}`.execute(db);
  }
  await sql`drop index pdus_room_depth_idx`.execute(db);
  await sql`drop index pdus_stream_ordering_idx`.execute(db);
  await sql`alter index pdus_room_stream_idx rename to events_room_idx`.execute(db);
  await sql`alter table pdus drop constraint pdus_pkey`.execute(db);
  await sql`alter table pdus alter column stream_ordering set not null`.execute(db);
  await sql`alter table pdus alter column state_group_before set not null`.execute(db);
  await sql`alter table pdus alter column state_group_after set not null`.execute(db);
  await sql`alter table pdus add constraint events_pkey primary key (stream_ordering)`.execute(db);
  await sql`alter table pdus add constraint events_event_id_key unique (event_id)`.execute(db);
  await sql`alter table pdus rename to events`.execute(db);
}
