import type { Kysely } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Administration (spec/admin.md): account states an admin sets (locked, MSC3939; suspended,
 * MSC3823; shadow-banned; erased), blocked rooms, reports from clients, the server-notices room
 * of each user, and the expiries room admins set on memberships and roles.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('users')
    .addColumn('locked', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('suspended', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('shadow_banned', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('erased', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('user_type', 'text')
    .execute();

  await db.schema
    .createTable('blocked_rooms')
    .addColumn('room_id', 'text', (c) => c.primaryKey())
    .addColumn('blocked_by', 'text')
    .addColumn('ts', 'bigint', (c) => c.notNull())
    .execute();

  // kind: 'event' (event_id set), 'room', or 'user' (target_user_id set).
  await db.schema
    .createTable('reports')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('received_ts', 'bigint', (c) => c.notNull())
    .addColumn('reporter', 'text', (c) => c.notNull())
    .addColumn('room_id', 'text')
    .addColumn('event_id', 'text')
    .addColumn('target_user_id', 'text')
    .addColumn('reason', 'text')
    .addColumn('score', 'integer')
    .execute();
  await db.schema.createIndex('reports_received_idx').on('reports').columns(['received_ts', 'id']).execute();

  await db.schema
    .createTable('server_notice_rooms')
    .addColumn('user_id', 'text', (c) => c.primaryKey())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .execute();

  // kind: 'membership' (the member is removed) or 'role' (their level drops to level_after).
  await db.schema
    .createTable('room_expiries')
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('expires_ts', 'bigint', (c) => c.notNull())
    .addColumn('set_by', 'text', (c) => c.notNull())
    .addColumn('level_after', 'integer')
    .addColumn('created_ts', 'bigint', (c) => c.notNull())
    .addColumn('claimed_until', 'bigint')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addPrimaryKeyConstraint('room_expiries_pk', ['room_id', 'user_id', 'kind'])
    .execute();
  await db.schema.createIndex('room_expiries_due_idx').on('room_expiries').column('expires_ts').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('room_expiries').execute();
  await db.schema.dropTable('server_notice_rooms').execute();
  await db.schema.dropTable('reports').execute();
  await db.schema.dropTable('blocked_rooms').execute();
  await db.schema
    .alterTable('users')
    .dropColumn('locked')
    .dropColumn('suspended')
    .dropColumn('shadow_banned')
    .dropColumn('erased')
    .dropColumn('user_type')
    .execute();
}
