import { type Kysely, sql } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Stream positions from a sequence instead of one counter row (src/streams/positions.ts).
 *
 * Until now every writer took its position by updating `stream_positions.main`, whose row lock
 * it then held until its transaction ended: writers of unrelated rooms waited on each other for
 * the whole of their transactions. Now a writer takes the next value of `stream_position_seq`
 * (no lock held past the call) and marks the position as in flight with a transaction-scoped
 * advisory lock (class 1131375971, object = the position), which ends when its transaction
 * commits or rolls back. Positions may then commit out of order, and a rolled-back one is never
 * used; readers see only the "persisted up to" position: below the oldest position still in
 * flight, or the last one handed out when none is.
 *
 * Handing out a position and marking it happen under a shared session-level advisory lock
 * (class 1131375972, object 0) that the reader takes exclusively for the instant it reads the
 * sequence: so a reader never sees a position handed out but not yet marked. The lock is
 * released inside the functions, on error too.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create sequence stream_position_seq minvalue 0 start with 0`.execute(db);
  await sql`select setval('stream_position_seq', (select position from stream_positions where name = 'main'), true)`.execute(
    db,
  );
  await sql`
    create function conclave_next_position() returns bigint language plpgsql as $$
    declare
      n bigint;
    begin
      perform pg_advisory_lock_shared(1131375972, 0);
      begin
        n := nextval('stream_position_seq');
        perform pg_advisory_xact_lock(1131375971, n::int4);
      exception when others or query_canceled then
        perform pg_advisory_unlock_shared(1131375972, 0);
        raise;
      end;
      perform pg_advisory_unlock_shared(1131375972, 0);
      return n;
    end $$`.execute(db);
  await sql`
    create function conclave_persisted_position() returns bigint language plpgsql as $$
    declare
      issued bigint;
      oldest bigint;
    begin
      perform pg_advisory_lock(1131375972, 0);
      begin
        select case when is_called then last_value else last_value - 1 end into issued
          from stream_position_seq;
      exception when others or query_canceled then
        perform pg_advisory_unlock(1131375972, 0);
        raise;
      end;
      perform pg_advisory_unlock(1131375972, 0);
      select min(objid::bigint) into oldest from pg_locks
        where locktype = 'advisory' and classid = 1131375971 and objsubid = 2 and objid::bigint <= issued;
      return coalesce(oldest - 1, issued);
    end $$`.execute(db);
  await db.schema.dropTable('stream_positions').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('stream_positions')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('position', 'bigint', (c) => c.notNull())
    .execute();
  await sql`insert into stream_positions (name, position) select 'main', conclave_persisted_position()`.execute(
    db,
  );
  await sql`drop function conclave_persisted_position()`.execute(db);
  await sql`drop function conclave_next_position()`.execute(db);
  await sql`drop sequence stream_position_seq`.execute(db);
}
