import { type Kysely, sql } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * End-to-end encryption keys and to-device messages. Signed JSON is kept as text (the JSON as
 * serialised by the server), not jsonb: jsonb cannot hold every string JSON can (a `\u0000`
 * escape, a lone surrogate), and keys must come back exactly as uploaded for their signatures to
 * verify. Device keys, one-time and fallback keys and waiting messages go with their device by
 * cascade (the services delete them explicitly too and record the device list change; the cascade
 * is a safety net for any other path that deletes devices).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  // The identity keys of each device: the signed DeviceKeys object as uploaded.
  await db.schema
    .createTable('e2e_device_keys')
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('key_json', 'text', (c) => c.notNull())
    .addColumn('ed25519_key', 'text', (c) => c.notNull())
    .addColumn('curve25519_key', 'text')
    .addColumn('updated_ts', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('e2e_device_keys_pkey', ['user_id', 'device_id'])
    .addForeignKeyConstraint(
      'e2e_device_keys_device_fkey',
      ['user_id', 'device_id'],
      'devices',
      ['user_id', 'device_id'],
      (c) => c.onDelete('cascade'),
    )
    .execute();

  // One-time keys, given out once each, oldest upload first (by id).
  await db.schema
    .createTable('e2e_one_time_keys')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('algorithm', 'text', (c) => c.notNull())
    .addColumn('key_id', 'text', (c) => c.notNull())
    .addColumn('key_json', 'text', (c) => c.notNull())
    .addUniqueConstraint('e2e_one_time_keys_key', ['user_id', 'device_id', 'algorithm', 'key_id'])
    .addForeignKeyConstraint(
      'e2e_one_time_keys_device_fkey',
      ['user_id', 'device_id'],
      'devices',
      ['user_id', 'device_id'],
      (c) => c.onDelete('cascade'),
    )
    .execute();
  await db.schema
    .createIndex('e2e_one_time_keys_claim_idx')
    .on('e2e_one_time_keys')
    .columns(['user_id', 'device_id', 'algorithm', 'id'])
    .execute();

  // At most one fallback key per device and algorithm; `used` once it has been claimed.
  await db.schema
    .createTable('e2e_fallback_keys')
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('algorithm', 'text', (c) => c.notNull())
    .addColumn('key_id', 'text', (c) => c.notNull())
    .addColumn('key_json', 'text', (c) => c.notNull())
    .addColumn('used', 'boolean', (c) => c.notNull().defaultTo(false))
    .addPrimaryKeyConstraint('e2e_fallback_keys_pkey', ['user_id', 'device_id', 'algorithm'])
    .addForeignKeyConstraint(
      'e2e_fallback_keys_device_fkey',
      ['user_id', 'device_id'],
      'devices',
      ['user_id', 'device_id'],
      (c) => c.onDelete('cascade'),
    )
    .execute();

  // A user's cross-signing keys: usage is master, self_signing or user_signing.
  await db.schema
    .createTable('e2e_cross_signing_keys')
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('usage', 'text', (c) => c.notNull())
    .addColumn('public_key', 'text', (c) => c.notNull())
    .addColumn('key_json', 'text', (c) => c.notNull())
    .addColumn('updated_ts', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('e2e_cross_signing_keys_pkey', ['user_id', 'usage'])
    .execute();

  // Signatures uploaded through /keys/signatures/upload, merged into /keys/query answers. The
  // target key is a device ID or a master key's public key.
  await db.schema
    .createTable('e2e_cross_signing_signatures')
    .addColumn('signer_user_id', 'text', (c) => c.notNull())
    .addColumn('signer_key_id', 'text', (c) => c.notNull())
    .addColumn('target_user_id', 'text', (c) => c.notNull())
    .addColumn('target_key_id', 'text', (c) => c.notNull())
    .addColumn('signature', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('e2e_cross_signing_signatures_pkey', [
      'target_user_id',
      'target_key_id',
      'signer_user_id',
      'signer_key_id',
    ])
    .execute();

  // Whose device list (device keys or cross-signing keys) changed at which stream position.
  // observer_id, when set, limits the change to that one user's view (a signature only its
  // signer may see).
  await db.schema
    .createTable('device_list_changes')
    .addColumn('stream_position', 'bigint', (c) => c.notNull())
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('observer_id', 'text')
    .execute();
  await db.schema
    .createIndex('device_list_changes_position_idx')
    .on('device_list_changes')
    .columns(['stream_position'])
    .execute();

  // To-device messages waiting for their recipient device.
  await db.schema
    .createTable('to_device_messages')
    .addColumn('stream_position', 'bigint', (c) => c.notNull())
    .addColumn('recipient_user_id', 'text', (c) => c.notNull())
    .addColumn('recipient_device_id', 'text', (c) => c.notNull())
    .addColumn('sender', 'text', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('content', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('to_device_messages_pkey', [
      'recipient_user_id',
      'recipient_device_id',
      'stream_position',
    ])
    .addForeignKeyConstraint(
      'to_device_messages_device_fkey',
      ['recipient_user_id', 'recipient_device_id'],
      'devices',
      ['user_id', 'device_id'],
      (c) => c.onDelete('cascade'),
    )
    .execute();

  // Idempotency of PUT /sendToDevice: one row per (sender, device, txn ID) already handled.
  await db.schema
    .createTable('to_device_txns')
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('txn_id', 'text', (c) => c.notNull())
    .addColumn('created_ts', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('to_device_txns_pkey', ['user_id', 'device_id', 'txn_id'])
    .execute();

  // Membership events by member: "whom did this user share rooms with at position N".
  await sql`create index events_member_idx on events (state_key, room_id, stream_ordering)
            where type = 'm.room.member'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index if exists events_member_idx`.execute(db);
  for (const table of [
    'to_device_txns',
    'to_device_messages',
    'device_list_changes',
    'e2e_cross_signing_signatures',
    'e2e_cross_signing_keys',
    'e2e_fallback_keys',
    'e2e_one_time_keys',
    'e2e_device_keys',
  ]) {
    await db.schema.dropTable(table).ifExists().execute();
  }
}
