import type { Kysely } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * The media repository (spec/media.md). `media` has one row per media ID of this server: created
 * by POST /media/v1/create (pending: `uploaded_ts` null until its PUT, gone after
 * `unused_expires_ts`) or by POST /media/v3/upload. The bytes live in the media store under their
 * SHA-256, so identical files share one copy; a file is removed only when no row of `media` or
 * `media_thumbnails` names its hash. `media_thumbnails` caches the thumbnails made of a media.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('media')
    .addColumn('media_id', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('created_ts', 'bigint', (c) => c.notNull())
    .addColumn('unused_expires_ts', 'bigint')
    .addColumn('uploaded_ts', 'bigint')
    .addColumn('content_type', 'text')
    .addColumn('upload_name', 'text')
    .addColumn('size', 'bigint')
    .addColumn('sha256', 'text')
    .addColumn('quarantined_ts', 'bigint')
    .addColumn('quarantined_by', 'text')
    .execute();
  await db.schema.createIndex('media_user_idx').on('media').columns(['user_id', 'created_ts']).execute();
  await db.schema.createIndex('media_sha256_idx').on('media').column('sha256').execute();
  await db.schema
    .createTable('media_thumbnails')
    .addColumn('media_id', 'text', (c) => c.notNull().references('media.media_id').onDelete('cascade'))
    .addColumn('width', 'integer', (c) => c.notNull())
    .addColumn('height', 'integer', (c) => c.notNull())
    .addColumn('method', 'text', (c) => c.notNull())
    .addColumn('animated', 'boolean', (c) => c.notNull())
    .addColumn('content_type', 'text', (c) => c.notNull())
    .addColumn('size', 'bigint', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addColumn('created_ts', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('media_thumbnails_pk', ['media_id', 'width', 'height', 'method', 'animated'])
    .execute();
  await db.schema
    .createIndex('media_thumbnails_sha256_idx')
    .on('media_thumbnails')
    .column('sha256')
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('media_thumbnails').execute();
  await db.schema.dropTable('media').execute();
}
