import type { Kysely } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Server-side key backups (client-server API, end-to-end encryption: server-side key backups).
 * Each user has numbered backup versions; numbers rise per user and are never reused, so a
 * deleted version stays as a row marked `deleted` (its keys are removed). `etag` counts the
 * changes to the version's stored keys. Backed-up session keys are opaque to the server apart
 * from the metadata that decides which of two copies of a session key to keep.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('room_key_backup_versions')
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('version', 'bigint', (c) => c.notNull())
    .addColumn('algorithm', 'text', (c) => c.notNull())
    .addColumn('auth_data', 'jsonb', (c) => c.notNull())
    .addColumn('etag', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('deleted', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('created_ts', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('room_key_backup_versions_pkey', ['user_id', 'version'])
    .execute();

  await db.schema
    .createTable('room_key_backup_keys')
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('version', 'bigint', (c) => c.notNull())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('session_id', 'text', (c) => c.notNull())
    .addColumn('first_message_index', 'bigint', (c) => c.notNull())
    .addColumn('forwarded_count', 'bigint', (c) => c.notNull())
    .addColumn('is_verified', 'boolean', (c) => c.notNull())
    .addColumn('session_data', 'jsonb', (c) => c.notNull())
    .addPrimaryKeyConstraint('room_key_backup_keys_pkey', ['user_id', 'version', 'room_id', 'session_id'])
    .addForeignKeyConstraint(
      'room_key_backup_keys_version_fkey',
      ['user_id', 'version'],
      'room_key_backup_versions',
      ['user_id', 'version'],
      (fk) => fk.onDelete('cascade'),
    )
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('room_key_backup_keys').execute();
  await db.schema.dropTable('room_key_backup_versions').execute();
}
