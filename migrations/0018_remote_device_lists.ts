import type { Kysely } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * The cache of remote users' device lists and cross-signing keys (spec/e2ee.md, "Keys of users
 * of other servers"), kept for users who share a room with a user of this server.
 *
 * `remote_device_lists`: one row per cached user. `stream_id` is the origin server's device list
 * version we hold (from GET /user/devices or the last m.device_list_update applied); `stale`
 * says the copy may be behind (a gap in the updates, an update that failed its checks) and must
 * be fetched again before it is served.
 *
 * `remote_device_keys`: the user's devices; `key_json` is the signed DeviceKeys object as the
 * origin served it (checked first), null for a device without keys.
 *
 * `remote_cross_signing_keys`: the user's master and self-signing keys (a user-signing key is
 * visible only to its owner and never crosses servers).
 *
 * Devices and keys go with their list row by cascade.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('remote_device_lists')
    .addColumn('user_id', 'text', (c) => c.primaryKey())
    .addColumn('stream_id', 'bigint', (c) => c.notNull())
    .addColumn('stale', 'boolean', (c) => c.notNull())
    .addColumn('updated_ts', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('remote_device_keys')
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('key_json', 'text')
    .addColumn('ed25519_key', 'text')
    .addColumn('display_name', 'text')
    .addPrimaryKeyConstraint('remote_device_keys_pkey', ['user_id', 'device_id'])
    .addForeignKeyConstraint(
      'remote_device_keys_list_fkey',
      ['user_id'],
      'remote_device_lists',
      ['user_id'],
      (c) => c.onDelete('cascade'),
    )
    .execute();
  await db.schema
    .createTable('remote_cross_signing_keys')
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('usage', 'text', (c) => c.notNull())
    .addColumn('public_key', 'text', (c) => c.notNull())
    .addColumn('key_json', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('remote_cross_signing_keys_pkey', ['user_id', 'usage'])
    .addForeignKeyConstraint(
      'remote_cross_signing_keys_list_fkey',
      ['user_id'],
      'remote_device_lists',
      ['user_id'],
      (c) => c.onDelete('cascade'),
    )
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('remote_cross_signing_keys').ifExists().execute();
  await db.schema.dropTable('remote_device_keys').ifExists().execute();
  await db.schema.dropTable('remote_device_lists').ifExists().execute();
}
