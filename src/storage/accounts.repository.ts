import type { Kysely, Transaction } from 'kysely';
import type { JsonObject } from '../protocol/json.ts';
import type { Database, DeviceRow, NewDeviceRow, NewUserRow, UserRow } from './database.ts';

/** Queries run on the pool or inside a transaction. */
export type Executor = Kysely<Database> | Transaction<Database>;

export async function insertUser(db: Executor, row: NewUserRow): Promise<boolean> {
  const result = await db
    .insertInto('users')
    .values(row)
    .onConflict((c) => c.doNothing())
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) === 1;
}

export function findUser(db: Executor, userId: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('user_id', '=', userId).executeTakeFirst();
}

export async function userExists(db: Executor, userId: string): Promise<boolean> {
  const row = await db.selectFrom('users').select('user_id').where('user_id', '=', userId).executeTakeFirst();
  return row !== undefined;
}

export async function updateUser(
  db: Executor,
  userId: string,
  changes: Partial<
    Pick<
      UserRow,
      | 'password_hash'
      | 'display_name'
      | 'avatar_url'
      | 'is_admin'
      | 'deactivated'
      | 'locked'
      | 'suspended'
      | 'shadow_banned'
      | 'erased'
      | 'user_type'
    >
  >,
): Promise<void> {
  await db.updateTable('users').set(changes).where('user_id', '=', userId).execute();
}

export async function upsertDevice(db: Executor, row: NewDeviceRow): Promise<void> {
  await db
    .insertInto('devices')
    .values(row)
    .onConflict((c) =>
      c.columns(['user_id', 'device_id']).doUpdateSet((eb) => ({
        // Keep a name the device already had unless a new one is given.
        display_name: eb.fn.coalesce(eb.ref('excluded.display_name'), eb.ref('devices.display_name')),
      })),
    )
    .execute();
}

export function listDevices(db: Executor, userId: string): Promise<DeviceRow[]> {
  return db.selectFrom('devices').selectAll().where('user_id', '=', userId).orderBy('device_id').execute();
}

export function findDevice(db: Executor, userId: string, deviceId: string): Promise<DeviceRow | undefined> {
  return db
    .selectFrom('devices')
    .selectAll()
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .executeTakeFirst();
}

export async function setDeviceDisplayName(
  db: Executor,
  userId: string,
  deviceId: string,
  displayName: string | null,
): Promise<boolean> {
  const r = await db
    .updateTable('devices')
    .set({ display_name: displayName })
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/** Deletes devices (and, by cascade, their access tokens). */
export async function deleteDevices(db: Executor, userId: string, deviceIds: string[]): Promise<void> {
  if (deviceIds.length === 0) return;
  // A device's pushers go with it (as its access tokens do): nobody reads its notifications any more.
  await db.deleteFrom('pushers').where('user_id', '=', userId).where('device_id', 'in', deviceIds).execute();
  await db.deleteFrom('devices').where('user_id', '=', userId).where('device_id', 'in', deviceIds).execute();
}

export async function insertAccessToken(
  db: Executor,
  row: {
    token_hash: string;
    user_id: string;
    device_id: string;
    created_ts: number;
    expires_ts?: number | null;
    refresh_token_hash?: string | null;
  },
): Promise<void> {
  await db.insertInto('access_tokens').values(row).execute();
}

export function findAccessToken(db: Executor, tokenHash: string) {
  return db
    .selectFrom('access_tokens')
    .innerJoin('users', 'users.user_id', 'access_tokens.user_id')
    .leftJoin('refresh_tokens', 'refresh_tokens.token_hash', 'access_tokens.refresh_token_hash')
    .select([
      'access_tokens.user_id',
      'access_tokens.device_id',
      'access_tokens.expires_ts',
      'access_tokens.refresh_token_hash',
      'refresh_tokens.previous_hash as refresh_previous_hash',
      'users.deactivated',
      'users.is_admin',
      'users.locked',
      'users.suspended',
      'users.shadow_banned',
    ])
    .where('access_tokens.token_hash', '=', tokenHash)
    .executeTakeFirst();
}

export async function deleteAccessToken(db: Executor, tokenHash: string): Promise<void> {
  await db.deleteFrom('access_tokens').where('token_hash', '=', tokenHash).execute();
}

/** Deletes the device's access and refresh tokens. */
export async function deleteDeviceTokens(db: Executor, userId: string, deviceId: string): Promise<void> {
  await db
    .deleteFrom('access_tokens')
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .execute();
  await db
    .deleteFrom('refresh_tokens')
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .execute();
}

export async function touchDevice(db: Executor, userId: string, deviceId: string, ip: string, ts: number) {
  await db
    .updateTable('devices')
    .set({ last_seen_ts: ts, last_seen_ip: ip })
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .execute();
}

/** Stores account data at a stream position the caller took in the same transaction. */
export async function putAccountData(
  db: Executor,
  userId: string,
  roomId: string,
  type: string,
  content: JsonObject,
  position: number,
): Promise<void> {
  await db
    .insertInto('account_data')
    .values({ user_id: userId, room_id: roomId, type, content: JSON.stringify(content), stream_id: position })
    .onConflict((c) =>
      c.columns(['user_id', 'room_id', 'type']).doUpdateSet((eb) => ({
        content: eb.ref('excluded.content'),
        stream_id: eb.ref('excluded.stream_id'),
      })),
    )
    .execute();
}

export async function getAccountData(
  db: Executor,
  userId: string,
  roomId: string,
  type: string,
): Promise<JsonObject | undefined> {
  const row = await db
    .selectFrom('account_data')
    .select('content')
    .where('user_id', '=', userId)
    .where('room_id', '=', roomId)
    .where('type', '=', type)
    .executeTakeFirst();
  return row?.content;
}

/** Account data of a user (global when roomId is '') written in (from, upTo]. */
export async function accountDataBetween(
  db: Executor,
  userId: string,
  roomId: string,
  from: number,
  upTo: number,
): Promise<Array<{ type: string; content: JsonObject }>> {
  return db
    .selectFrom('account_data')
    .select(['type', 'content'])
    .where('user_id', '=', userId)
    .where('room_id', '=', roomId)
    .where('stream_id', '>', from)
    .where('stream_id', '<=', upTo)
    .execute();
}
