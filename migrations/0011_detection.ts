import type { Kysely } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Detection and response (spec/detection.md):
 * - `detection_account_restrictions`: accounts a detector (or an admin) locked or suspended. A
 *   locked account's tokens answer 401 M_USER_LOCKED; a suspended one may read but not write.
 * - `detection_notice_rooms`: the server-notices room the system user made for the admins.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('detection_account_restrictions')
    .addColumn('user_id', 'text', (c) => c.primaryKey())
    .addColumn('locked', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('suspended', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('updated_ts', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('detection_notice_rooms')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('detection_notice_rooms').execute();
  await db.schema.dropTable('detection_account_restrictions').execute();
}
