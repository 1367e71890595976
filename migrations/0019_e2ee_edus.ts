import type { Kysely } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * The end-to-end encryption EDUs between servers (spec/federation.md, spec/e2ee.md).
 *
 * `device_list_outbound`: per local user, the `stream_id` of the latest m.device_list_update
 * made for them (whether or not any server was sent it): the next update's `prev_id`, so that a
 * server that missed one sees the gap and resyncs.
 *
 * `federation_inbound_to_device`: the m.direct_to_device messages received, by origin server and
 * `message_id`, so that one sent twice (a retried transaction) is delivered once. Rows older than
 * a day are forgotten.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('device_list_outbound')
    .addColumn('user_id', 'text', (c) => c.primaryKey())
    .addColumn('stream_id', 'bigint', (c) => c.notNull())
    .addColumn('updated_ts', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('federation_inbound_to_device')
    .addColumn('origin', 'text', (c) => c.notNull())
    .addColumn('message_id', 'text', (c) => c.notNull())
    .addColumn('received_ts', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('federation_inbound_to_device_pkey', ['origin', 'message_id'])
    .execute();
  await db.schema
    .createIndex('federation_inbound_to_device_received')
    .on('federation_inbound_to_device')
    .column('received_ts')
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('federation_inbound_to_device').ifExists().execute();
  await db.schema.dropTable('device_list_outbound').ifExists().execute();
}
