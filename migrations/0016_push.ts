import { type Kysely, sql } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Push (spec/push.md).
 *
 * `push_rule_changes`: one row per user who changed their push rules: their own rules per kind,
 * in priority order, and what they changed of the server-default rules (enabled, actions).
 * Users without a row have the server defaults.
 *
 * `pushers`: HTTP pushers, one per (user, app_id, pushkey).
 *
 * `push_notifications`: the events the user's push rules said to notify of (GET /notifications,
 * the counts sent to push gateways).
 *
 * `push_queue`: notifications owed to pushers; a delivery claims a row by moving `due_ts` past
 * its lease, so one process sends each, and a failed one waits `due_ts` for its retry.
 *
 * `push_progress`: up to which stream position events have been evaluated (one row, `main`).
 * Events persisted before this migration are never evaluated.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('push_rule_changes')
    .addColumn('user_id', 'text', (c) => c.primaryKey())
    .addColumn('rules', 'jsonb', (c) => c.notNull())
    .addColumn('updated_ts', 'bigint', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('pushers')
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('app_id', 'text', (c) => c.notNull())
    .addColumn('pushkey', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('app_display_name', 'text', (c) => c.notNull())
    .addColumn('device_display_name', 'text', (c) => c.notNull())
    .addColumn('profile_tag', 'text')
    .addColumn('lang', 'text', (c) => c.notNull())
    .addColumn('data', 'jsonb', (c) => c.notNull())
    .addColumn('pushkey_ts', 'bigint', (c) => c.notNull())
    .addColumn('device_id', 'text')
    .addPrimaryKeyConstraint('pushers_pk', ['user_id', 'app_id', 'pushkey'])
    .execute();
  await db.schema.createIndex('pushers_key_idx').on('pushers').columns(['app_id', 'pushkey']).execute();

  await db.schema
    .createTable('push_notifications')
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('event_id', 'text', (c) => c.notNull())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('stream_ordering', 'bigint', (c) => c.notNull())
    .addColumn('actions', 'jsonb', (c) => c.notNull())
    .addColumn('highlight', 'boolean', (c) => c.notNull())
    .addColumn('ts', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('push_notifications_pk', ['user_id', 'event_id'])
    .execute();
  await db.schema
    .createIndex('push_notifications_user_idx')
    .on('push_notifications')
    .columns(['user_id', 'stream_ordering'])
    .execute();
  await db.schema
    .createIndex('push_notifications_room_idx')
    .on('push_notifications')
    .column('room_id')
    .execute();

  await db.schema
    .createTable('push_queue')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('app_id', 'text', (c) => c.notNull())
    .addColumn('pushkey', 'text', (c) => c.notNull())
    .addColumn('event_id', 'text', (c) => c.notNull())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('tweaks', 'jsonb', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('due_ts', 'bigint', (c) => c.notNull())
    .addColumn('created_ts', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('push_queue_due_idx').on('push_queue').column('due_ts').execute();

  await db.schema
    .createTable('push_progress')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('position', 'bigint', (c) => c.notNull())
    .execute();
  await sql`insert into push_progress (name, position)
    select 'main', coalesce((select position from stream_positions where name = 'main'), 0)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('push_progress').execute();
  await db.schema.dropTable('push_queue').execute();
  await db.schema.dropTable('push_notifications').execute();
  await db.schema.dropTable('pushers').execute();
  await db.schema.dropTable('push_rule_changes').execute();
}
