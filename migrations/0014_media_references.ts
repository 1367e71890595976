import type { Kysely } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Which events reference which media of this server (spec/media.md, spec/retention.md).
 *
 * `media_references`: one row per stored event and media of this server its content names
 * (`url`, `file.url`, `info.thumbnail_url`, `info.thumbnail_file.url`, a member's `avatar_url`),
 * written in the event's transaction. A purge or a room deletion removes the rows of the events
 * it deletes (or prunes).
 *
 * `media.unreferenced_ts`: when the last row naming the media went (null while an event names
 * it, or when none ever did). Only such media are deleted, once their grace period has passed:
 * media no event ever named (a profile avatar, a file not sent yet) are never deleted this way.
 *
 * Events stored before this migration have no rows; their media are never deleted this way.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('media_references')
    .addColumn('event_id', 'text', (c) => c.notNull())
    .addColumn('media_id', 'text', (c) => c.notNull())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('media_references_pk', ['event_id', 'media_id'])
    .execute();
  await db.schema
    .createIndex('media_references_media_idx')
    .on('media_references')
    .column('media_id')
    .execute();
  await db.schema.createIndex('media_references_room_idx').on('media_references').column('room_id').execute();
  await db.schema.alterTable('media').addColumn('unreferenced_ts', 'bigint').execute();
  await db.schema
    .createIndex('media_unreferenced_idx')
    .on('media')
    .column('unreferenced_ts')
    .where('unreferenced_ts', 'is not', null)
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex('media_unreferenced_idx').execute();
  await db.schema.alterTable('media').dropColumn('unreferenced_ts').execute();
  await db.schema.dropTable('media_references').execute();
}
