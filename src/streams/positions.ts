import { sql } from 'kysely';
import type { Executor } from '../storage/accounts.repository.ts';

/**
 * The one stream position counter shared by events, account data and receipts. Taking a position
 * locks the counter's row until the transaction ends, so positions commit in order: whoever reads
 * position N (committed) may rely on every change at or below N being visible.
 */
export async function nextPosition(trx: Executor): Promise<number> {
  const row = await sql<{ position: number }>`
    update stream_positions set position = position + 1 where name = 'main' returning position`.execute(trx);
  const position = row.rows[0]?.position;
  if (position === undefined) throw new Error('stream_positions has no main row');
  return Number(position);
}

/** The highest committed position. */
export async function currentPosition(db: Executor): Promise<number> {
  const row = await db
    .selectFrom('stream_positions')
    .select('position')
    .where('name', '=', 'main')
    .executeTakeFirstOrThrow();
  return Number(row.position);
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
