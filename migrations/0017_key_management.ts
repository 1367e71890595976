import type { Kysely } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Refresh tokens and access-token lifetimes (spec/account.md).
 *
 * `access_tokens.expires_ts`: when the token stops working (null: never; tokens of clients that
 * did not ask for a refresh token). `access_tokens.refresh_token_hash`: the refresh token given
 * with it, if any.
 *
 * `refresh_tokens`: only the SHA-256 of each refresh token is kept, as for access tokens.
 * `previous_hash` names the refresh token this one replaced: that one stays usable until this
 * one, or the access token given with it, is first used (then the row it names is deleted and
 * the column cleared). `expires_ts`: when the refresh token stops working (null: never).
 * Refresh tokens go with their device by cascade.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('access_tokens').addColumn('expires_ts', 'bigint').execute();
  await db.schema.alterTable('access_tokens').addColumn('refresh_token_hash', 'text').execute();
  await db.schema
    .createIndex('access_tokens_refresh_idx')
    .on('access_tokens')
    .column('refresh_token_hash')
    .where('refresh_token_hash', 'is not', null)
    .execute();
  await db.schema
    .createTable('refresh_tokens')
    .addColumn('token_hash', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('previous_hash', 'text')
    .addColumn('created_ts', 'bigint', (c) => c.notNull())
    .addColumn('expires_ts', 'bigint')
    .addForeignKeyConstraint(
      'refresh_tokens_device_fkey',
      ['user_id', 'device_id'],
      'devices',
      ['user_id', 'device_id'],
      (c) => c.onDelete('cascade'),
    )
    .execute();
  await db.schema
    .createIndex('refresh_tokens_device_idx')
    .on('refresh_tokens')
    .columns(['user_id', 'device_id'])
    .execute();
  await db.schema
    .createIndex('refresh_tokens_previous_idx')
    .on('refresh_tokens')
    .column('previous_hash')
    .where('previous_hash', 'is not', null)
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('refresh_tokens').execute();
  await db.schema.dropIndex('access_tokens_refresh_idx').execute();
  await db.schema.alterTable('access_tokens').dropColumn('refresh_token_hash').execute();
  await db.schema.alterTable('access_tokens').dropColumn('expires_ts').execute();
}
