import { sql } from 'kysely';
import type { JsonObject } from '../protocol/json.ts';
import type { Executor } from './accounts.repository.ts';

/** Stored filters (POST /user/{userId}/filter), keyed by user and filter ID. */

/** Inserts a filter; false when the user already has one with that ID. */
export async function insertFilter(
  db: Executor,
  userId: string,
  filterId: string,
  filter: JsonObject,
  ts: number,
): Promise<boolean> {
  const result = await db
    .insertInto('filters')
    .values({ user_id: userId, filter_id: filterId, filter: JSON.stringify(filter), created_ts: ts })
    .onConflict((c) => c.columns(['user_id', 'filter_id']).doNothing())
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) === 1;
}

export async function findFilter(
  db: Executor,
  userId: string,
  filterId: string,
): Promise<JsonObject | undefined> {
  const row = await db
    .selectFrom('filters')
    .select('filter')
    .where('user_id', '=', userId)
    .where('filter_id', '=', filterId)
    .executeTakeFirst();
  return row?.filter;
}

/** The ID of a filter of the user equal to this one as JSON (key order aside), if there is one. */
export async function findFilterIdByContent(
  db: Executor,
  userId: string,
  filter: JsonObject,
): Promise<string | undefined> {
  const row = await db
    .selectFrom('filters')
    .select('filter_id')
    .where('user_id', '=', userId)
    .where(sql<boolean>`filter = ${JSON.stringify(filter)}::jsonb`)
    .orderBy('created_ts')
    .limit(1)
    .executeTakeFirst();
  return row?.filter_id;
}
