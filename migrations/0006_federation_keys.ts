import type { Kysely } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Other servers' signing keys, fetched directly or through a notary (server-server API:
 * Retrieving server keys).
 *
 * `remote_server_keys` holds one row per (server, key ID): `valid_until_ts` is the largest
 * validity seen for the key as a current key, already capped at 7 days after it was fetched
 * (null when it was only ever seen as an old key); `expired_ts` the earliest time the server said
 * it stopped using the key (null while it is current). `remote_server_key_responses` keeps the
 * newest self-signed key response per server as it arrived (text JSON, as in 0003), so this
 * server can answer notary queries from its cache.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('remote_server_keys')
    .addColumn('server_name', 'text', (c) => c.notNull())
    .addColumn('key_id', 'text', (c) => c.notNull())
    .addColumn('public_key', 'text', (c) => c.notNull())
    .addColumn('valid_until_ts', 'bigint')
    .addColumn('expired_ts', 'bigint')
    .addColumn('fetched_ts', 'bigint', (c) => c.notNull())
    .addColumn('fetched_from', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('remote_server_keys_pkey', ['server_name', 'key_id'])
    .execute();

  await db.schema
    .createTable('remote_server_key_responses')
    .addColumn('server_name', 'text', (c) => c.primaryKey())
    .addColumn('response', 'text', (c) => c.notNull())
    .addColumn('valid_until_ts', 'bigint', (c) => c.notNull())
    .addColumn('fetched_ts', 'bigint', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('remote_server_key_responses').execute();
  await db.schema.dropTable('remote_server_keys').execute();
}
