import { type Kysely, sql } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Rooms and their events. Every persistent change a client can sync (events, account data,
 * receipts) takes its position from one counter, `stream_positions.main`, incremented inside the
 * writing transaction: the row lock orders writers, so a reader that sees position N knows every
 * change at or below N is committed.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('stream_positions')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('position', 'bigint', (c) => c.notNull())
    .execute();
  // Start above every account data stream id already handed out by migration 0001's sequence.
  await sql`insert into stream_positions (name, position)
            select 'main', coalesce(max(stream_id), 0) from account_data`.execute(db);

  await db.schema
    .createTable('rooms')
    .addColumn('room_id', 'text', (c) => c.primaryKey())
    .addColumn('room_version', 'text', (c) => c.notNull())
    .addColumn('creator', 'text', (c) => c.notNull())
    .addColumn('published', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('created_ts', 'bigint', (c) => c.notNull())
    .execute();

  // State groups: the state before an event, stored as a delta on an earlier group.
  await db.schema
    .createTable('state_groups')
    .addColumn('id', 'bigint', (c) => c.primaryKey())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('prev_group', 'bigint')
    .addColumn('chain_length', 'integer', (c) => c.notNull())
    .execute();
  await sql`create sequence state_group_seq`.execute(db);
  await db.schema
    .createTable('state_group_entries')
    .addColumn('group_id', 'bigint', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('state_key', 'text', (c) => c.notNull())
    .addColumn('event_id', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('state_group_entries_pkey', ['group_id', 'type', 'state_key'])
    .execute();

  await db.schema
    .createTable('events')
    .addColumn('stream_ordering', 'bigint', (c) => c.primaryKey())
    .addColumn('event_id', 'text', (c) => c.notNull().unique())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('state_key', 'text')
    .addColumn('sender', 'text', (c) => c.notNull())
    .addColumn('membership', 'text')
    .addColumn('depth', 'bigint', (c) => c.notNull())
    .addColumn('origin_server_ts', 'bigint', (c) => c.notNull())
    .addColumn('state_group_before', 'bigint', (c) => c.notNull())
    .addColumn('state_group_after', 'bigint', (c) => c.notNull())
    .addColumn('json', 'jsonb', (c) => c.notNull())
    .addColumn('redacted_by', 'text')
    .execute();
  await db.schema
    .createIndex('events_room_idx')
    .on('events')
    .columns(['room_id', 'stream_ordering'])
    .execute();

  await db.schema
    .createTable('room_forward_extremities')
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('event_id', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('room_forward_extremities_pkey', ['room_id', 'event_id'])
    .execute();

  await db.schema
    .createTable('current_state')
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('state_key', 'text', (c) => c.notNull())
    .addColumn('event_id', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('current_state_pkey', ['room_id', 'type', 'state_key'])
    .execute();

  // The current membership of every user who ever had one in a room.
  await db.schema
    .createTable('memberships')
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('membership', 'text', (c) => c.notNull())
    .addColumn('event_id', 'text', (c) => c.notNull())
    .addColumn('stream_ordering', 'bigint', (c) => c.notNull())
    .addColumn('forgotten', 'boolean', (c) => c.notNull().defaultTo(false))
    .addPrimaryKeyConstraint('memberships_pkey', ['room_id', 'user_id'])
    .execute();
  await db.schema
    .createIndex('memberships_user_idx')
    .on('memberships')
    .columns(['user_id', 'membership'])
    .execute();

  await db.schema
    .createTable('room_aliases')
    .addColumn('alias', 'text', (c) => c.primaryKey())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('creator', 'text', (c) => c.notNull())
    .addColumn('created_ts', 'bigint', (c) => c.notNull())
    .execute();

  // Idempotency of PUT /send and /state with a transaction ID, per device.
  await db.schema
    .createTable('event_txns')
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('txn_id', 'text', (c) => c.notNull())
    .addColumn('event_id', 'text', (c) => c.notNull())
    .addColumn('created_ts', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('event_txns_pkey', ['user_id', 'device_id', 'room_id', 'txn_id'])
    .execute();

  await db.schema
    .createTable('receipts')
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('receipt_type', 'text', (c) => c.notNull())
    .addColumn('thread_id', 'text', (c) => c.notNull())
    .addColumn('event_id', 'text', (c) => c.notNull())
    .addColumn('ts', 'bigint', (c) => c.notNull())
    .addColumn('stream_ordering', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('receipts_pkey', ['room_id', 'user_id', 'receipt_type', 'thread_id'])
    .execute();
  await db.schema
    .createIndex('receipts_stream_idx')
    .on('receipts')
    .columns(['room_id', 'stream_ordering'])
    .execute();

  await db.schema
    .createTable('filters')
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('filter_id', 'text', (c) => c.notNull())
    .addColumn('filter', 'jsonb', (c) => c.notNull())
    .addColumn('created_ts', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('filters_pkey', ['user_id', 'filter_id'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const table of [
    'filters',
    'receipts',
    'event_txns',
    'room_aliases',
    'memberships',
    'current_state',
    'room_forward_extremities',
    'events',
    'state_group_entries',
    'state_groups',
    'rooms',
    'stream_positions',
  ]) {
    await db.schema.dropTable(table).execute();
  }
  await sql`drop sequence state_group_seq`.execute(db);
}
