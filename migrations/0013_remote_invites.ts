import type { Kysely } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * The stripped state that came with an invite (PUT /v2/invite) or a knock's answer
 * (send_knock's knock_room_state) for a room this server is not in: what clients are shown of
 * the room until one of its users joins. One row per membership event.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('room_stripped_state')
    .addColumn('event_id', 'text', (c) => c.primaryKey())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('state', 'jsonb', (c) => c.notNull())
    .addColumn('received_ts', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('room_stripped_state_user_idx')
    .on('room_stripped_state')
    .columns(['user_id', 'room_id'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('room_stripped_state').execute();
}
