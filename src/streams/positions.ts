import { sql } from 'kysely';
import type { Executor } from '../storage/accounts.repository.ts';

/**
 * The one stream position sequence shared by events, account data, receipts, to-device messages,
 * device lists and presence (migration 0022).
 *
 * `nextPosition` hands out the next position in the caller's transaction without holding a lock
 * past the call, so writers of different rooms no longer wait on each other; the position is
 * marked in flight until that transaction ends. Positions may therefore commit out of order, and
 * one whose transaction rolls back is never used (a hole). Readers must not go past a position
 * still in flight, or a change committed later below what they read would be skipped for good:
 * `currentPosition` is the "persisted up to" position, below the oldest position in flight.
 */
export async function nextPosition(trx: Executor): Promise<number> {
  const row = await sql<{ position: string | number }>`select conclave_next_position() as position`.execute(
    trx,
  );
  const position = row.rows[0]?.position;
  if (position === undefined) throw new Error('stream_position_seq gave no position');
  return Number(position);
}

/**
 * The highest position at or below which every change is committed (or rolled back): what a sync
 * may answer up to. Call it with the database, not inside a transaction that took positions
 * (it would stop below them).
 */
export async function currentPosition(db: Executor): Promise<number> {
  const row = await sql<{
    position: string | number;
  }>`select conclave_persisted_position() as position`.execute(db);
  return Number(row.rows[0]!.position);
}

/**
 * A position for a backfilled event: below zero and below every earlier backfill, so history in
 * position order puts it before what the server already had, and no incremental sync (which reads
 * above a non-negative token) delivers it as new.
 */
export async function nextBackfillPosition(trx: Executor): Promise<number> {
  const row = await sql<{ position: number }>`select nextval('backfill_ordering_seq') as position`.execute(
    trx,
  );
  return Number(row.rows[0]!.position);
}

/** `count` backfill positions at once, highest first (each below every earlier one). */
export async function reserveBackfillPositions(db: Executor, count: number): Promise<number[]> {
  if (count <= 0) return [];
  const rows = await sql<{ position: number }>`
    select nextval('backfill_ordering_seq') as position from generate_series(1, ${count})`.execute(db);
  return rows.rows.map((r) => Number(r.position)).sort((a, b) => b - a);
}
