import { sql } from 'kysely';
import type { Executor } from './accounts.repository.ts';
import type {
  MediaRow,
  MediaThumbnailRow,
  NewMediaRow,
  RemoteMediaRow,
  RemoteMediaThumbnailRow,
} from './database.ts';

/** The media table and its thumbnails (spec/media.md). */

export async function insertMedia(db: Executor, row: NewMediaRow): Promise<void> {
  await db.insertInto('media').values(row).execute();
}

export function findMedia(db: Executor, mediaId: string): Promise<MediaRow | undefined> {
  return db.selectFrom('media').selectAll().where('media_id', '=', mediaId).executeTakeFirst();
}

/** Fills in a pending media; false when it was uploaded meanwhile (or is gone). */
export async function completePendingMedia(
  db: Executor,
  mediaId: string,
  fields: {
    uploaded_ts: number;
    content_type: string | null;
    upload_name: string | null;
    size: number;
    sha256: string;
  },
): Promise<boolean> {
  const result = await db
    .updateTable('media')
    .set({ ...fields, unused_expires_ts: null })
    .where('media_id', '=', mediaId)
    .where('uploaded_ts', 'is', null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Pending media of a user that have not expired. */
export async function countPendingMedia(db: Executor, userId: string, now: number): Promise<number> {
  const row = await db
    .selectFrom('media')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('user_id', '=', userId)
    .where('uploaded_ts', 'is', null)
    .where('unused_expires_ts', '>', now)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** Removes pending media whose time ran out, of one user or (userId undefined) of everyone. */
export async function deleteExpiredPending(db: Executor, now: number, userId?: string): Promise<number> {
  let q = db.deleteFrom('media').where('uploaded_ts', 'is', null).where('unused_expires_ts', '<=', now);
  if (userId !== undefined) q = q.where('user_id', '=', userId);
  const result = await q.executeTakeFirst();
  return Number(result.numDeletedRows);
}

/** Bytes of the user's uploaded media (each upload counts, even when its bytes are shared). */
export async function usedBytes(db: Executor, userId: string): Promise<number> {
  const row = await db
    .selectFrom('media')
    .select(sql<number>`coalesce(sum(size), 0)`.as('n'))
    .where('user_id', '=', userId)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

export async function setQuarantined(
  db: Executor,
  mediaId: string,
  by: string | null,
  ts: number,
): Promise<boolean> {
  const result = await db
    .updateTable('media')
    .set({ quarantined_ts: ts, quarantined_by: by })
    .where('media_id', '=', mediaId)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Deletes a media and its thumbnails; returns the hashes they named. */
export async function deleteMediaRow(db: Executor, mediaId: string): Promise<string[] | undefined> {
  const thumbs = await db
    .deleteFrom('media_thumbnails')
    .where('media_id', '=', mediaId)
    .returning('sha256')
    .execute();
  const row = await db
    .deleteFrom('media')
    .where('media_id', '=', mediaId)
    .returning('sha256')
    .executeTakeFirst();
  if (!row) return undefined;
  return [...new Set([row.sha256, ...thumbs.map((t) => t.sha256)].filter((h): h is string => h !== null))];
}

/** Whether any media or thumbnail, of this server or a remote one kept here, still names this hash. */
export async function hashInUse(db: Executor, sha256: string): Promise<boolean> {
  for (const table of ['media', 'media_thumbnails', 'remote_media', 'remote_media_thumbnails'] as const) {
    const row = await db
      .selectFrom(table)
      .select('media_id')
      .where('sha256', '=', sha256)
      .limit(1)
      .executeTakeFirst();
    if (row) return true;
  }
  return false;
}

/**
 * Serialises, per hash, taking bytes in and deleting them, until the transaction ends: an upload
 * of the same bytes cannot slip between a deletion's check and its removal of the file.
 */
export async function lockHash(db: Executor, sha256: string): Promise<void> {
  const key = BigInt.asIntN(64, BigInt(`0x${sha256.slice(0, 16)}`));
  await sql`select pg_advisory_xact_lock(${key.toString()}::bigint)`.execute(db);
}

export function listUserMedia(
  db: Executor,
  userId: string,
  opts: { limit: number; beforeTs?: number },
): Promise<MediaRow[]> {
  let q = db.selectFrom('media').selectAll().where('user_id', '=', userId);
  if (opts.beforeTs !== undefined) q = q.where('created_ts', '<', opts.beforeTs);
  return q.orderBy('created_ts', 'desc').orderBy('media_id').limit(opts.limit).execute();
}

export function findThumbnail(
  db: Executor,
  key: { media_id: string; width: number; height: number; method: string; animated: boolean },
): Promise<MediaThumbnailRow | undefined> {
  return db
    .selectFrom('media_thumbnails')
    .selectAll()
    .where('media_id', '=', key.media_id)
    .where('width', '=', key.width)
    .where('height', '=', key.height)
    .where('method', '=', key.method)
    .where('animated', '=', key.animated)
    .executeTakeFirst();
}

export async function insertThumbnail(db: Executor, row: MediaThumbnailRow): Promise<void> {
  await db
    .insertInto('media_thumbnails')
    .values(row)
    .onConflict((c) => c.columns(['media_id', 'width', 'height', 'method', 'animated']).doNothing())
    .execute();
}

// Media of other servers, kept once fetched (migration 0020).

export function findRemoteMedia(
  db: Executor,
  origin: string,
  mediaId: string,
): Promise<RemoteMediaRow | undefined> {
  return db
    .selectFrom('remote_media')
    .selectAll()
    .where('origin', '=', origin)
    .where('media_id', '=', mediaId)
    .executeTakeFirst();
}

/** Records a fetched remote media; a row another process wrote meanwhile is kept. */
export async function insertRemoteMedia(db: Executor, row: RemoteMediaRow): Promise<void> {
  await db
    .insertInto('remote_media')
    .values(row)
    .onConflict((c) => c.columns(['origin', 'media_id']).doNothing())
    .execute();
}

export function findRemoteThumbnail(
  db: Executor,
  key: { origin: string; media_id: string; width: number; height: number; method: string; animated: boolean },
): Promise<RemoteMediaThumbnailRow | undefined> {
  return db
    .selectFrom('remote_media_thumbnails')
    .selectAll()
    .where('origin', '=', key.origin)
    .where('media_id', '=', key.media_id)
    .where('width', '=', key.width)
    .where('height', '=', key.height)
    .where('method', '=', key.method)
    .where('animated', '=', key.animated)
    .executeTakeFirst();
}

export async function insertRemoteThumbnail(db: Executor, row: RemoteMediaThumbnailRow): Promise<void> {
  await db
    .insertInto('remote_media_thumbnails')
    .values(row)
    .onConflict((c) => c.columns(['origin', 'media_id', 'width', 'height', 'method', 'animated']).doNothing())
    .execute();
}
