import type { Kysely } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Detection and response (spec/detection.md):
 * - `detection_notice_rooms`: the server-notices room the system user made for the admins.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('detection_notice_rooms')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('detection_notice_rooms').execute();
}
