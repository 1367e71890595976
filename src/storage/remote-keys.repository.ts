import { sql } from 'kysely';
import type { JsonObject } from '../protocol/json.ts';
import type { Executor } from './accounts.repository.ts';

/**
 * The cache of remote users' device lists and cross-signing keys (migration 0018). JSON columns
 * are text, as for local keys: values go in through JSON.stringify and come out through JSON.parse.
 */

export interface RemoteListState {
  userId: string;
  streamId: number;
  stale: boolean;
}

export interface RemoteDevice {
  deviceId: string;
  /** The checked DeviceKeys object; null for a device without keys. */
  keys: JsonObject | null;
  ed25519: string | null;
  displayName: string | null;
}

export interface RemoteCrossSigningKey {
  usage: 'master' | 'self_signing';
  publicKey: string;
  key: JsonObject;
}

/** A user's whole cached list: what a resync writes and what a query reads. */
export interface RemoteDeviceList {
  userId: string;
  streamId: number;
  stale: boolean;
  devices: RemoteDevice[];
  crossSigning: RemoteCrossSigningKey[];
}

export async function listStates(
  db: Executor,
  userIds: readonly string[],
): Promise<Map<string, RemoteListState>> {
  if (userIds.length === 0) return new Map();
  const rows = await db
    .selectFrom('remote_device_lists')
    .select(['user_id', 'stream_id', 'stale'])
    .where('user_id', 'in', userIds)
    .execute();
  return new Map(rows.map((r) => [r.user_id, { userId: r.user_id, streamId: r.stream_id, stale: r.stale }]));
}

export async function cachedLists(db: Executor, userIds: readonly string[]): Promise<RemoteDeviceList[]> {
  if (userIds.length === 0) return [];
  const [lists, devices, keys] = await Promise.all([
    db.selectFrom('remote_device_lists').selectAll().where('user_id', 'in', userIds).execute(),
    db
      .selectFrom('remote_device_keys')
      .selectAll()
      .where('user_id', 'in', userIds)
      .orderBy('user_id')
      .orderBy('device_id')
      .execute(),
    db.selectFrom('remote_cross_signing_keys').selectAll().where('user_id', 'in', userIds).execute(),
  ]);
  return lists.map((l) => ({
    userId: l.user_id,
    streamId: l.stream_id,
    stale: l.stale,
    devices: devices
      .filter((d) => d.user_id === l.user_id)
      .map((d) => ({
        deviceId: d.device_id,
        keys: d.key_json === null ? null : (JSON.parse(d.key_json) as JsonObject),
        ed25519: d.ed25519_key,
        displayName: d.display_name,
      })),
    crossSigning: keys
      .filter((k) => k.user_id === l.user_id)
      .map((k) => ({ usage: k.usage, publicKey: k.public_key, key: JSON.parse(k.key_json) as JsonObject })),
  }));
}

/** Creates the list row (or updates its stream ID and stale flag). */
export async function putListState(db: Executor, state: RemoteListState, now: number): Promise<void> {
  await db
    .insertInto('remote_device_lists')
    .values({ user_id: state.userId, stream_id: state.streamId, stale: state.stale, updated_ts: now })
    .onConflict((c) =>
      c.column('user_id').doUpdateSet({ stream_id: state.streamId, stale: state.stale, updated_ts: now }),
    )
    .execute();
}

/** Marks cached lists stale; returns the users that had one. */
export async function markStale(db: Executor, userIds: readonly string[]): Promise<string[]> {
  if (userIds.length === 0) return [];
  const rows = await db
    .updateTable('remote_device_lists')
    .set({ stale: true })
    .where('user_id', 'in', userIds)
    .returning('user_id')
    .execute();
  return rows.map((r) => r.user_id);
}

/** Forgets users' cached lists (with their devices and keys, by cascade). */
export async function deleteLists(db: Executor, userIds: readonly string[]): Promise<void> {
  if (userIds.length === 0) return;
  await db.deleteFrom('remote_device_lists').where('user_id', 'in', userIds).execute();
}

/** Replaces the user's devices and cross-signing keys with these (the list row must exist). */
export async function replaceContents(
  db: Executor,
  userId: string,
  devices: readonly RemoteDevice[],
  crossSigning: readonly RemoteCrossSigningKey[],
): Promise<void> {
  await db.deleteFrom('remote_device_keys').where('user_id', '=', userId).execute();
  await db.deleteFrom('remote_cross_signing_keys').where('user_id', '=', userId).execute();
  for (let i = 0; i < devices.length; i += 200) {
    await db
      .insertInto('remote_device_keys')
      .values(devices.slice(i, i + 200).map((d) => deviceRow(userId, d)))
      .execute();
  }
  for (const k of crossSigning) await putCrossSigningKey(db, userId, k);
}

function deviceRow(userId: string, d: RemoteDevice) {
  return {
    user_id: userId,
    device_id: d.deviceId,
    key_json: d.keys === null ? null : JSON.stringify(d.keys),
    ed25519_key: d.ed25519,
    display_name: d.displayName,
  };
}

export async function putDevice(db: Executor, userId: string, d: RemoteDevice): Promise<void> {
  const row = deviceRow(userId, d);
  await db
    .insertInto('remote_device_keys')
    .values(row)
    .onConflict((c) =>
      c.columns(['user_id', 'device_id']).doUpdateSet({
        key_json: row.key_json,
        ed25519_key: row.ed25519_key,
        display_name: row.display_name,
      }),
    )
    .execute();
}

export async function deleteDevice(db: Executor, userId: string, deviceId: string): Promise<void> {
  await db
    .deleteFrom('remote_device_keys')
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .execute();
}

export async function putCrossSigningKey(
  db: Executor,
  userId: string,
  k: RemoteCrossSigningKey,
): Promise<void> {
  const values = {
    user_id: userId,
    usage: k.usage,
    public_key: k.publicKey,
    key_json: JSON.stringify(k.key),
  };
  await db
    .insertInto('remote_cross_signing_keys')
    .values(values)
    .onConflict((c) =>
      c
        .columns(['user_id', 'usage'])
        .doUpdateSet({ public_key: values.public_key, key_json: values.key_json }),
    )
    .execute();
}

export async function deleteCrossSigningKey(
  db: Executor,
  userId: string,
  usage: 'master' | 'self_signing',
): Promise<void> {
  await db
    .deleteFrom('remote_cross_signing_keys')
    .where('user_id', '=', userId)
    .where('usage', '=', usage)
    .execute();
}

/**
 * Of the (remote) users, those joined now to a room a user of `serverName` is joined to: the
 * users whose device lists this server keeps up to date.
 */
export async function sharingRoomWithLocalUser(
  db: Executor,
  userIds: readonly string[],
  serverName: string,
): Promise<Set<string>> {
  if (userIds.length === 0) return new Set();
  const suffix = `%:${serverName.replace(/[\\%_]/g, (c) => `\\${c}`)}`;
  const rows = await db
    .selectFrom('memberships as other')
    .innerJoin('memberships as mine', 'mine.room_id', 'other.room_id')
    .select('other.user_id')
    .distinct()
    .where('other.user_id', 'in', userIds)
    .where('other.membership', '=', 'join')
    .where('mine.membership', '=', 'join')
    .where(sql<boolean>`mine.user_id like ${suffix} escape '\\'`)
    .execute();
  return new Set(rows.map((r) => r.user_id));
}
