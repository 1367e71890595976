import { type Kysely, sql } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Presence and relations (spec/presence.md, spec/relations.md).
 *
 * `presence`: one row per local user whose presence was ever set. `stream_ordering` is the main
 * stream position of the latest change a client should hear about (a new state or status
 * message); `last_active_ts` is refreshed without a new position, so a user who keeps syncing
 * costs no stream traffic.
 *
 * `event_relations`: one row per timeline event whose content has a valid `m.relates_to`
 * (`rel_type` and `event_id`), written when the event is persisted. `key` is an annotation's key.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('presence')
    .addColumn('user_id', 'text', (c) => c.primaryKey())
    .addColumn('presence', 'text', (c) => c.notNull())
    .addColumn('status_msg', 'text')
    .addColumn('last_active_ts', 'bigint', (c) => c.notNull())
    .addColumn('stream_ordering', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('presence_stream_idx').on('presence').column('stream_ordering').execute();

  await db.schema
    .createTable('event_relations')
    .addColumn('event_id', 'text', (c) => c.primaryKey())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('parent_id', 'text', (c) => c.notNull())
    .addColumn('rel_type', 'text', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('sender', 'text', (c) => c.notNull())
    .addColumn('key', 'text')
    .addColumn('stream_ordering', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('event_relations_parent_idx')
    .on('event_relations')
    .columns(['parent_id', 'rel_type', 'stream_ordering'])
    .execute();
  await db.schema
    .createIndex('event_relations_threads_idx')
    .on('event_relations')
    .columns(['room_id', 'rel_type', 'stream_ordering'])
    .where(sql.ref('rel_type'), '=', 'm.thread')
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('event_relations').execute();
  await db.schema.dropTable('presence').execute();
}
