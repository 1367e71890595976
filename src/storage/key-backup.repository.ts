import { sql, type Transaction } from 'kysely';
import type { JsonObject } from '../protocol/json.ts';
import type { Executor } from './accounts.repository.ts';
import type {
  Database,
  NewRoomKeyBackupKeyRow,
  RoomKeyBackupKeyRow,
  RoomKeyBackupVersionRow,
} from './database.ts';

/**
 * Server-side key backups: the versions of each user's backup and the session keys stored in
 * them. Every query names the user, so one user's rows are never reached through another's.
 */

/** The class of the advisory locks below: "keyb", so they cannot meet the rooms' locks. */
const BACKUP_LOCK_CLASS = 0x6b657962;

/**
 * Serialises the writers of one user's backups until the transaction ends, so that "which
 * version is current" cannot change between checking it and writing keys, and version numbers
 * are handed out once.
 */
export async function lockUserBackups(trx: Transaction<Database>, userId: string): Promise<void> {
  await sql`select pg_advisory_xact_lock(${BACKUP_LOCK_CLASS}::int, hashtext(${userId}))`.execute(trx);
}

/** The highest version number the user ever had, deleted versions included; 0 when none. */
export async function highestVersionNumber(db: Executor, userId: string): Promise<number> {
  const row = await db
    .selectFrom('room_key_backup_versions')
    .select((eb) => eb.fn.max('version').as('max'))
    .where('user_id', '=', userId)
    .executeTakeFirst();
  return Number(row?.max ?? 0);
}

export async function insertVersion(
  db: Executor,
  row: { user_id: string; version: number; algorithm: string; auth_data: JsonObject; created_ts: number },
): Promise<void> {
  await db
    .insertInto('room_key_backup_versions')
    .values({ ...row, auth_data: JSON.stringify(row.auth_data) })
    .execute();
}

/** One version of the user's backup, deleted or not. */
export function findVersion(
  db: Executor,
  userId: string,
  version: number,
): Promise<RoomKeyBackupVersionRow | undefined> {
  return db
    .selectFrom('room_key_backup_versions')
    .selectAll()
    .where('user_id', '=', userId)
    .where('version', '=', version)
    .executeTakeFirst();
}

/** The user's current backup: the highest version not deleted. */
export function currentVersion(db: Executor, userId: string): Promise<RoomKeyBackupVersionRow | undefined> {
  return db
    .selectFrom('room_key_backup_versions')
    .selectAll()
    .where('user_id', '=', userId)
    .where('deleted', '=', false)
    .orderBy('version', 'desc')
    .limit(1)
    .executeTakeFirst();
}

export async function updateAuthData(
  db: Executor,
  userId: string,
  version: number,
  authData: JsonObject,
): Promise<void> {
  await db
    .updateTable('room_key_backup_versions')
    .set({ auth_data: JSON.stringify(authData) })
    .where('user_id', '=', userId)
    .where('version', '=', version)
    .execute();
}

/** Marks a version deleted and removes its keys; the row stays so its number is never reused. */
export async function markVersionDeleted(db: Executor, userId: string, version: number): Promise<void> {
  await deleteKeys(db, userId, version, {});
  await db
    .updateTable('room_key_backup_versions')
    .set({ deleted: true })
    .where('user_id', '=', userId)
    .where('version', '=', version)
    .execute();
}

/** Counts one more change to the version's stored keys; returns the new etag counter. */
export async function bumpEtag(db: Executor, userId: string, version: number): Promise<number> {
  const row = await db
    .updateTable('room_key_backup_versions')
    .set((eb) => ({ etag: eb('etag', '+', 1) }))
    .where('user_id', '=', userId)
    .where('version', '=', version)
    .returning('etag')
    .executeTakeFirstOrThrow();
  return Number(row.etag);
}

export async function countKeys(db: Executor, userId: string, version: number): Promise<number> {
  const row = await db
    .selectFrom('room_key_backup_keys')
    .select((eb) => eb.fn.countAll().as('n'))
    .where('user_id', '=', userId)
    .where('version', '=', version)
    .executeTakeFirst();
  return Number(row?.n ?? 0);
}

/** Rows per INSERT: 8 parameters each, far below PostgreSQL's limit of 65535. */
const INSERT_CHUNK = 1000;

/**
 * Stores session keys. A key for a session the version already holds replaces the stored one
 * only when the spec's rule prefers it (client-server API, server-side key backups):
 * `is_verified` true wins over false; with equal `is_verified`, the lower
 * `first_message_index` wins; with both equal, the lower `forwarded_count` wins. On a full tie
 * the stored key stays. Returns how many rows were inserted or replaced.
 */
export async function storeKeys(db: Executor, rows: NewRoomKeyBackupKeyRow[]): Promise<number> {
  let changed = 0;
  for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
    const written = await db
      .insertInto('room_key_backup_keys')
      .values(rows.slice(i, i + INSERT_CHUNK))
      .onConflict((oc) =>
        oc
          .columns(['user_id', 'version', 'room_id', 'session_id'])
          .doUpdateSet((eb) => ({
            first_message_index: eb.ref('excluded.first_message_index'),
            forwarded_count: eb.ref('excluded.forwarded_count'),
            is_verified: eb.ref('excluded.is_verified'),
            session_data: eb.ref('excluded.session_data'),
          }))
          .where(
            sql<boolean>`(excluded.is_verified and not room_key_backup_keys.is_verified)
              or (excluded.is_verified = room_key_backup_keys.is_verified
                  and (excluded.first_message_index < room_key_backup_keys.first_message_index
                       or (excluded.first_message_index = room_key_backup_keys.first_message_index
                           and excluded.forwarded_count < room_key_backup_keys.forwarded_count)))`,
          ),
      )
      // Only the rows actually inserted or updated come back.
      .returning('session_id')
      .execute();
    changed += written.length;
  }
  return changed;
}

/** Which keys a read or delete is about: all of the version, one room's, or one session's. */
export interface KeyScope {
  roomId?: string;
  sessionId?: string;
}

export function findKeys(
  db: Executor,
  userId: string,
  version: number,
  scope: KeyScope,
): Promise<RoomKeyBackupKeyRow[]> {
  let q = db
    .selectFrom('room_key_backup_keys')
    .selectAll()
    .where('user_id', '=', userId)
    .where('version', '=', version);
  if (scope.roomId !== undefined) q = q.where('room_id', '=', scope.roomId);
  if (scope.sessionId !== undefined) q = q.where('session_id', '=', scope.sessionId);
  return q.orderBy('room_id').orderBy('session_id').execute();
}

/** Deletes keys; returns how many were deleted. */
export async function deleteKeys(
  db: Executor,
  userId: string,
  version: number,
  scope: KeyScope,
): Promise<number> {
  let q = db.deleteFrom('room_key_backup_keys').where('user_id', '=', userId).where('version', '=', version);
  if (scope.roomId !== undefined) q = q.where('room_id', '=', scope.roomId);
  if (scope.sessionId !== undefined) q = q.where('session_id', '=', scope.sessionId);
  const result = await q.executeTakeFirst();
  return Number(result.numDeletedRows ?? 0);
}
