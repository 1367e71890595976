import type { Kysely } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Media of other servers, fetched over federation and kept (spec/media.md, Remote media).
 * `remote_media` has one row per `mxc://<origin>/<media_id>` fetched; its bytes live in the media
 * store under their SHA-256, like local media, so a file is removed only when no row of `media`,
 * `media_thumbnails`, `remote_media` or `remote_media_thumbnails` names its hash.
 * `remote_media_thumbnails` keeps the thumbnails of remote media, asked of the origin or made here.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('remote_media')
    .addColumn('origin', 'text', (c) => c.notNull())
    .addColumn('media_id', 'text', (c) => c.notNull())
    .addColumn('fetched_ts', 'bigint', (c) => c.notNull())
    .addColumn('content_type', 'text', (c) => c.notNull())
    .addColumn('upload_name', 'text')
    .addColumn('size', 'bigint', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('remote_media_pk', ['origin', 'media_id'])
    .execute();
  await db.schema.createIndex('remote_media_sha256_idx').on('remote_media').column('sha256').execute();
  await db.schema
    .createTable('remote_media_thumbnails')
    .addColumn('origin', 'text', (c) => c.notNull())
    .addColumn('media_id', 'text', (c) => c.notNull())
    .addColumn('width', 'integer', (c) => c.notNull())
    .addColumn('height', 'integer', (c) => c.notNull())
    .addColumn('method', 'text', (c) => c.notNull())
    .addColumn('animated', 'boolean', (c) => c.notNull())
    .addColumn('content_type', 'text', (c) => c.notNull())
    .addColumn('size', 'bigint', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addColumn('created_ts', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('remote_media_thumbnails_pk', [
      'origin',
      'media_id',
      'width',
      'height',
      'method',
      'animated',
    ])
    .execute();
  await db.schema
    .createIndex('remote_media_thumbnails_sha256_idx')
    .on('remote_media_thumbnails')
    .column('sha256')
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('remote_media_thumbnails').ifExists().execute();
  await db.schema.dropTable('remote_media').ifExists().execute();
}
