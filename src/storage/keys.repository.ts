import { sql } from 'kysely';
import type { JsonObject } from '../protocol/json.ts';
import type { Executor } from './accounts.repository.ts';
import type {
  CrossSigningKeyRow,
  CrossSigningSignatureRow,
  CrossSigningUsage,
  DeviceKeysRow,
} from './database.ts';

/**
 * End-to-end encryption keys, device list changes and to-device messages. JSON columns are text
 * (see migration 0003): values go in through JSON.stringify and come out through JSON.parse here.
 */

function parse(text: string): JsonObject {
  return JSON.parse(text) as JsonObject;
}

// ---------------------------------------------------------------------------------------------
// Device keys

export interface StoredDeviceKeys {
  userId: string;
  deviceId: string;
  keys: JsonObject;
  ed25519: string;
  curve25519: string | null;
  displayName: string | null;
}

function storedDeviceKeys(row: DeviceKeysRow & { display_name?: string | null }): StoredDeviceKeys {
  return {
    userId: row.user_id,
    deviceId: row.device_id,
    keys: parse(row.key_json),
    ed25519: row.ed25519_key,
    curve25519: row.curve25519_key,
    displayName: row.display_name ?? null,
  };
}

export async function getDeviceKeys(
  db: Executor,
  userId: string,
  deviceId: string,
): Promise<StoredDeviceKeys | undefined> {
  const row = await db
    .selectFrom('e2e_device_keys')
    .selectAll()
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .executeTakeFirst();
  return row && storedDeviceKeys(row);
}

/** Device keys of the users' devices that still exist, with each device's display name. */
export async function listDeviceKeys(db: Executor, userIds: readonly string[]): Promise<StoredDeviceKeys[]> {
  if (userIds.length === 0) return [];
  const rows = await db
    .selectFrom('e2e_device_keys as k')
    .innerJoin('devices as d', (j) =>
      j.onRef('d.user_id', '=', 'k.user_id').onRef('d.device_id', '=', 'k.device_id'),
    )
    .selectAll('k')
    .select('d.display_name')
    .where('k.user_id', 'in', userIds)
    .orderBy('k.user_id')
    .orderBy('k.device_id')
    .execute();
  return rows.map(storedDeviceKeys);
}

export async function putDeviceKeys(
  db: Executor,
  row: { userId: string; deviceId: string; keys: JsonObject; ed25519: string; curve25519: string | null },
  now: number,
): Promise<void> {
  const values = {
    user_id: row.userId,
    device_id: row.deviceId,
    key_json: JSON.stringify(row.keys),
    ed25519_key: row.ed25519,
    curve25519_key: row.curve25519,
    updated_ts: now,
  };
  await db
    .insertInto('e2e_device_keys')
    .values(values)
    .onConflict((c) =>
      c.columns(['user_id', 'device_id']).doUpdateSet({ key_json: values.key_json, updated_ts: now }),
    )
    .execute();
}

export async function deviceExists(db: Executor, userId: string, deviceId: string): Promise<boolean> {
  const row = await db
    .selectFrom('devices')
    .select('device_id')
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .executeTakeFirst();
  return row !== undefined;
}

/** The device IDs of each of the users, in one query (users without devices are absent). */
export async function deviceIdsOfUsers(
  db: Executor,
  userIds: readonly string[],
): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  if (userIds.length === 0) return out;
  const rows = await db
    .selectFrom('devices')
    .select(['user_id', 'device_id'])
    .where('user_id', 'in', userIds)
    .execute();
  for (const r of rows) out.set(r.user_id, [...(out.get(r.user_id) ?? []), r.device_id]);
  return out;
}

export async function deviceIdsOf(db: Executor, userId: string): Promise<string[]> {
  const rows = await db.selectFrom('devices').select('device_id').where('user_id', '=', userId).execute();
  return rows.map((r) => r.device_id);
}

// ---------------------------------------------------------------------------------------------
// One-time and fallback keys

export interface OneTimeKey {
  algorithm: string;
  keyId: string;
  key: JsonObject | string;
}

/** The stored JSON of the listed one-time keys of a device, by `algorithm:key_id`. */
export async function existingOneTimeKeys(
  db: Executor,
  userId: string,
  deviceId: string,
  keys: readonly OneTimeKey[],
): Promise<Map<string, string>> {
  if (keys.length === 0) return new Map();
  const rows = await db
    .selectFrom('e2e_one_time_keys')
    .select(['algorithm', 'key_id', 'key_json'])
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .where((eb) =>
      eb.or(keys.map((k) => eb.and([eb('algorithm', '=', k.algorithm), eb('key_id', '=', k.keyId)]))),
    )
    .execute();
  return new Map(rows.map((r) => [`${r.algorithm}:${r.key_id}`, r.key_json]));
}

export async function insertOneTimeKeys(
  db: Executor,
  userId: string,
  deviceId: string,
  keys: readonly OneTimeKey[],
): Promise<void> {
  if (keys.length === 0) return;
  await db
    .insertInto('e2e_one_time_keys')
    .values(
      keys.map((k) => ({
        user_id: userId,
        device_id: deviceId,
        algorithm: k.algorithm,
        key_id: k.keyId,
        key_json: JSON.stringify(k.key),
      })),
    )
    .onConflict((c) => c.columns(['user_id', 'device_id', 'algorithm', 'key_id']).doNothing())
    .execute();
}

export async function countOneTimeKeys(
  db: Executor,
  userId: string,
  deviceId: string,
): Promise<Record<string, number>> {
  const rows = await db
    .selectFrom('e2e_one_time_keys')
    .select(['algorithm', (eb) => eb.fn.countAll<string | number>().as('n')])
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .groupBy('algorithm')
    .execute();
  return Object.fromEntries(rows.map((r) => [r.algorithm, Number(r.n)]));
}

/** One device's wish in POST /keys/claim: a key of this algorithm. */
export interface KeyClaim {
  userId: string;
  deviceId: string;
  algorithm: string;
}

export interface ClaimedKey extends KeyClaim {
  keyId: string;
  key: JsonObject | string;
}

/** The wishes as a VALUES list of (user_id, device_id, algorithm) rows. */
function claimRows(claims: readonly KeyClaim[]) {
  return sql.join(claims.map((c) => sql`(${c.userId}, ${c.deviceId}, ${c.algorithm})`));
}

interface ClaimRow {
  user_id: string;
  device_id: string;
  algorithm: string;
  key_id: string;
  key_json: string;
}

function claimedKeys(rows: readonly ClaimRow[]): ClaimedKey[] {
  return rows.map((r) => ({
    userId: r.user_id,
    deviceId: r.device_id,
    algorithm: r.algorithm,
    keyId: r.key_id,
    key: JSON.parse(r.key_json) as JsonObject | string,
  }));
}

/**
 * Takes the oldest one-time key of each listed device for its algorithm and deletes it, all in one
 * statement. SKIP LOCKED lets concurrent claims take different keys instead of waiting for each
 * other; a key is never handed out twice because it is handed out by the statement that deletes
 * it. Devices without such a key are absent from the result.
 */
export async function claimOneTimeKeys(db: Executor, claims: readonly KeyClaim[]): Promise<ClaimedKey[]> {
  if (claims.length === 0) return [];
  const result = await sql<ClaimRow>`
    delete from e2e_one_time_keys where id in (
      select picked.id from (values ${claimRows(claims)}) as w(user_id, device_id, algorithm)
      cross join lateral (
        select k.id from e2e_one_time_keys k
        where k.user_id = w.user_id and k.device_id = w.device_id and k.algorithm = w.algorithm
        order by k.id limit 1 for update skip locked) picked)
    returning user_id, device_id, algorithm, key_id, key_json`.execute(db);
  return claimedKeys(result.rows);
}

/**
 * Marks the fallback key of each listed device for its algorithm used and returns them (fallback
 * keys are handed out again and again), in one statement.
 */
export async function claimFallbackKeys(db: Executor, claims: readonly KeyClaim[]): Promise<ClaimedKey[]> {
  if (claims.length === 0) return [];
  const result = await sql<ClaimRow>`
    update e2e_fallback_keys f set used = true
    from (values ${claimRows(claims)}) as w(user_id, device_id, algorithm)
    where f.user_id = w.user_id and f.device_id = w.device_id and f.algorithm = w.algorithm
    returning f.user_id, f.device_id, f.algorithm, f.key_id, f.key_json`.execute(db);
  return claimedKeys(result.rows);
}

export async function getFallbackKey(
  db: Executor,
  userId: string,
  deviceId: string,
  algorithm: string,
): Promise<{ keyId: string; keyJson: string; used: boolean } | undefined> {
  const row = await db
    .selectFrom('e2e_fallback_keys')
    .select(['key_id', 'key_json', 'used'])
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .where('algorithm', '=', algorithm)
    .executeTakeFirst();
  return row && { keyId: row.key_id, keyJson: row.key_json, used: row.used };
}

/** Stores a device's fallback key for an algorithm, replacing (and so un-using) any other. */
export async function putFallbackKey(
  db: Executor,
  userId: string,
  deviceId: string,
  key: OneTimeKey,
): Promise<void> {
  const keyJson = JSON.stringify(key.key);
  await db
    .insertInto('e2e_fallback_keys')
    .values({
      user_id: userId,
      device_id: deviceId,
      algorithm: key.algorithm,
      key_id: key.keyId,
      key_json: keyJson,
      used: false,
    })
    .onConflict((c) =>
      c.columns(['user_id', 'device_id', 'algorithm']).doUpdateSet({
        key_id: key.keyId,
        key_json: keyJson,
        used: false,
      }),
    )
    .execute();
}

export async function unusedFallbackAlgorithms(
  db: Executor,
  userId: string,
  deviceId: string,
): Promise<string[]> {
  const rows = await db
    .selectFrom('e2e_fallback_keys')
    .select('algorithm')
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .where('used', '=', false)
    .orderBy('algorithm')
    .execute();
  return rows.map((r) => r.algorithm);
}

// ---------------------------------------------------------------------------------------------
// Cross-signing keys and signatures

export interface StoredCrossSigningKey {
  userId: string;
  usage: CrossSigningUsage;
  publicKey: string;
  key: JsonObject;
}

function storedCrossSigningKey(row: CrossSigningKeyRow): StoredCrossSigningKey {
  return { userId: row.user_id, usage: row.usage, publicKey: row.public_key, key: parse(row.key_json) };
}

export async function crossSigningKeysOf(
  db: Executor,
  userIds: readonly string[],
): Promise<StoredCrossSigningKey[]> {
  if (userIds.length === 0) return [];
  const rows = await db
    .selectFrom('e2e_cross_signing_keys')
    .selectAll()
    .where('user_id', 'in', userIds)
    .execute();
  return rows.map(storedCrossSigningKey);
}

export async function putCrossSigningKey(
  db: Executor,
  key: { userId: string; usage: CrossSigningUsage; publicKey: string; key: JsonObject },
  now: number,
): Promise<void> {
  const values = {
    user_id: key.userId,
    usage: key.usage,
    public_key: key.publicKey,
    key_json: JSON.stringify(key.key),
    updated_ts: now,
  };
  await db
    .insertInto('e2e_cross_signing_keys')
    .values(values)
    .onConflict((c) =>
      c.columns(['user_id', 'usage']).doUpdateSet({
        public_key: values.public_key,
        key_json: values.key_json,
        updated_ts: now,
      }),
    )
    .execute();
}

export async function deleteCrossSigningKey(
  db: Executor,
  userId: string,
  usage: CrossSigningUsage,
): Promise<void> {
  await db
    .deleteFrom('e2e_cross_signing_keys')
    .where('user_id', '=', userId)
    .where('usage', '=', usage)
    .execute();
}

export async function putSignature(db: Executor, row: CrossSigningSignatureRow): Promise<void> {
  await db
    .insertInto('e2e_cross_signing_signatures')
    .values(row)
    .onConflict((c) =>
      c
        .columns(['target_user_id', 'target_key_id', 'signer_user_id', 'signer_key_id'])
        .doUpdateSet({ signature: row.signature }),
    )
    .execute();
}

/** Every uploaded signature on keys of the users. */
export function signaturesOn(db: Executor, userIds: readonly string[]): Promise<CrossSigningSignatureRow[]> {
  if (userIds.length === 0) return Promise.resolve([]);
  return db
    .selectFrom('e2e_cross_signing_signatures')
    .selectAll()
    .where('target_user_id', 'in', userIds)
    .execute();
}

/** Forgets signatures made by one of a user's keys (a replaced cross-signing key, a deleted device). */
export async function deleteSignaturesBy(db: Executor, userId: string, keyIds: readonly string[]) {
  if (keyIds.length === 0) return;
  await db
    .deleteFrom('e2e_cross_signing_signatures')
    .where('signer_user_id', '=', userId)
    .where('signer_key_id', 'in', keyIds)
    .execute();
}

/** Forgets signatures on one of a user's keys (a device ID or a master public key). */
export async function deleteSignaturesOn(db: Executor, userId: string, targetKeyIds: readonly string[]) {
  if (targetKeyIds.length === 0) return;
  await db
    .deleteFrom('e2e_cross_signing_signatures')
    .where('target_user_id', '=', userId)
    .where('target_key_id', 'in', targetKeyIds)
    .execute();
}

// ---------------------------------------------------------------------------------------------
// Devices going away

/** Deletes everything end-to-end encryption kept for the devices (keys, waiting messages, txns). */
export async function deleteDeviceData(db: Executor, userId: string, deviceIds: readonly string[]) {
  if (deviceIds.length === 0) return;
  await db
    .deleteFrom('e2e_device_keys')
    .where('user_id', '=', userId)
    .where('device_id', 'in', deviceIds)
    .execute();
  await db
    .deleteFrom('e2e_one_time_keys')
    .where('user_id', '=', userId)
    .where('device_id', 'in', deviceIds)
    .execute();
  await db
    .deleteFrom('e2e_fallback_keys')
    .where('user_id', '=', userId)
    .where('device_id', 'in', deviceIds)
    .execute();
  await db
    .deleteFrom('to_device_messages')
    .where('recipient_user_id', '=', userId)
    .where('recipient_device_id', 'in', deviceIds)
    .execute();
  await db
    .deleteFrom('to_device_txns')
    .where('user_id', '=', userId)
    .where('device_id', 'in', deviceIds)
    .execute();
  await deleteSignaturesOn(db, userId, deviceIds);
  await deleteSignaturesBy(
    db,
    userId,
    deviceIds.map((d) => `ed25519:${d}`),
  );
}

// ---------------------------------------------------------------------------------------------
// Device list changes and who shares rooms with whom

export async function insertDeviceListChange(
  db: Executor,
  position: number,
  userId: string,
  observerId: string | null = null,
): Promise<void> {
  await db
    .insertInto('device_list_changes')
    .values({ stream_position: position, user_id: userId, observer_id: observerId })
    .execute();
}

/** Device list changes in (from, upTo] that `viewer` may see. */
export function deviceListChangesBetween(
  db: Executor,
  viewer: string,
  from: number,
  upTo: number,
): Promise<Array<{ user_id: string; observer_id: string | null }>> {
  return db
    .selectFrom('device_list_changes')
    .select(['user_id', 'observer_id'])
    .where('stream_position', '>', from)
    .where('stream_position', '<=', upTo)
    .where((eb) => eb.or([eb('observer_id', 'is', null), eb('observer_id', '=', viewer)]))
    .execute();
}

/** Users joined now to a room the user is joined to now (the user included if joined anywhere). */
export async function usersSharingRoomNow(db: Executor, userId: string): Promise<string[]> {
  const rows = await db
    .selectFrom('memberships as mine')
    .innerJoin('memberships as other', 'other.room_id', 'mine.room_id')
    .select('other.user_id')
    .distinct()
    .where('mine.user_id', '=', userId)
    .where('mine.membership', '=', 'join')
    .where('other.membership', '=', 'join')
    .execute();
  return rows.map((r) => r.user_id);
}

/**
 * Of the candidates, those joined at stream position `position` to a room the user was joined to
 * at that position. Read from the rooms' current memberships (`memberships`, which also holds the
 * members a remote join brought as state, never timeline events), and, for a membership that
 * changed after `position`, from the room's resolved state at it: the current state group of the
 * room's last timeline event at or before `position` (a state group resolves by walking at most
 * MAX_CHAIN deltas). One statement; a membership current at `position`, the usual case, costs one
 * primary-key lookup per room of the user and candidate.
 */
export async function usersSharingRoomAt(
  db: Executor,
  userId: string,
  position: number,
  candidates: readonly string[],
): Promise<Set<string>> {
  if (candidates.length === 0) return new Set();
  const users = sql.join([...new Set([userId, ...candidates])]);
  const result = await sql<{ user_id: string }>`
    with recursive pairs as (
      select m.room_id, m.user_id, m.membership, m.stream_ordering from memberships m
      where m.room_id in (select room_id from memberships where user_id = ${userId})
        and m.user_id in (${users})
    ),
    changed_rooms as (
      select distinct room_id from pairs where stream_ordering > ${position}
    ),
    room_group as (
      select c.room_id, (
        select e.room_state_group from events e
        where e.room_id = c.room_id and e.stream_ordering > 0 and e.stream_ordering <= ${position}
          and e.room_state_group is not null
        order by e.stream_ordering desc limit 1
      ) as group_id
      from changed_rooms c
    ),
    chain(room_id, id, prev, n) as (
      select r.room_id, g.id, g.prev_group, 0 from room_group r join state_groups g on g.id = r.group_id
      union all
      select c.room_id, g.id, g.prev_group, c.n + 1 from chain c join state_groups g on g.id = c.prev
    ),
    past as (
      select distinct on (p.room_id, p.user_id) p.room_id, p.user_id, d.membership
      from pairs p
      join chain c on c.room_id = p.room_id
      join state_group_entries s
        on s.group_id = c.id and s.type = 'm.room.member' and s.state_key = p.user_id
      join pdus d on d.event_id = s.event_id
      where p.stream_ordering > ${position}
      order by p.room_id, p.user_id, c.n
    ),
    at_position as (
      select room_id, user_id, membership from pairs where stream_ordering <= ${position}
      union all
      select room_id, user_id, membership from past
    )
    select distinct other.user_id from at_position other
    join at_position mine on mine.room_id = other.room_id
    where mine.user_id = ${userId} and mine.membership = 'join'
      and other.user_id <> ${userId} and other.membership = 'join'`.execute(db);
  return new Set(result.rows.map((r) => r.user_id));
}

/** Membership events in (from, upTo] of the rooms the user has or had a membership in. */
export function membershipEventsBetween(
  db: Executor,
  userId: string,
  from: number,
  upTo: number,
): Promise<Array<{ room_id: string; state_key: string | null; membership: string | null }>> {
  return db
    .selectFrom('events')
    .select(['room_id', 'state_key', 'membership'])
    .where('type', '=', 'm.room.member')
    .where('stream_ordering', '>', from)
    .where('stream_ordering', '<=', upTo)
    .where('room_id', 'in', (eb) =>
      eb.selectFrom('memberships').select('room_id').where('user_id', '=', userId),
    )
    .execute();
}

/** Everyone who has or had a membership in the rooms. */
export async function membersOfRooms(db: Executor, roomIds: readonly string[]): Promise<string[]> {
  if (roomIds.length === 0) return [];
  const rows = await db
    .selectFrom('memberships')
    .select('user_id')
    .distinct()
    .where('room_id', 'in', roomIds)
    .execute();
  return rows.map((r) => r.user_id);
}

// ---------------------------------------------------------------------------------------------
// To-device messages

/** Records a to-device transaction ID; false when the device already used it. */
export async function insertToDeviceTxn(
  db: Executor,
  userId: string,
  deviceId: string,
  txnId: string,
  now: number,
): Promise<boolean> {
  const result = await db
    .insertInto('to_device_txns')
    .values({ user_id: userId, device_id: deviceId, txn_id: txnId, created_ts: now })
    .onConflict((c) => c.columns(['user_id', 'device_id', 'txn_id']).doNothing())
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) === 1;
}

/** Forgets to-device transaction IDs recorded before `before` (epoch ms). */
export async function deleteToDeviceTxnsBefore(db: Executor, before: number): Promise<void> {
  await db.deleteFrom('to_device_txns').where('created_ts', '<', before).execute();
}

export async function insertToDeviceMessages(
  db: Executor,
  rows: ReadonlyArray<{
    position: number;
    userId: string;
    deviceId: string;
    sender: string;
    type: string;
    content: JsonObject;
  }>,
): Promise<void> {
  if (rows.length === 0) return;
  await db
    .insertInto('to_device_messages')
    .values(
      rows.map((r) => ({
        stream_position: r.position,
        recipient_user_id: r.userId,
        recipient_device_id: r.deviceId,
        sender: r.sender,
        type: r.type,
        content: JSON.stringify(r.content),
      })),
    )
    .execute();
}

export async function toDeviceMessagesBetween(
  db: Executor,
  userId: string,
  deviceId: string,
  from: number,
  upTo: number,
): Promise<JsonObject[]> {
  const rows = await db
    .selectFrom('to_device_messages')
    .select(['sender', 'type', 'content'])
    .where('recipient_user_id', '=', userId)
    .where('recipient_device_id', '=', deviceId)
    .where('stream_position', '>', from)
    .where('stream_position', '<=', upTo)
    .orderBy('stream_position')
    .execute();
  return rows.map((r) => ({ sender: r.sender, type: r.type, content: parse(r.content) }));
}

export async function deleteToDeviceMessagesUpTo(
  db: Executor,
  userId: string,
  deviceId: string,
  upTo: number,
): Promise<void> {
  await db
    .deleteFrom('to_device_messages')
    .where('recipient_user_id', '=', userId)
    .where('recipient_device_id', '=', deviceId)
    .where('stream_position', '<=', upTo)
    .execute();
}

/**
 * The user's device list version for other servers (GET /user/devices `stream_id`): the stream
 * position of the latest change everyone may see, 0 when there was none.
 */
export async function latestDeviceListPosition(db: Executor, userId: string): Promise<number> {
  const row = await db
    .selectFrom('device_list_changes')
    .select((eb) => eb.fn.max('stream_position').as('position'))
    .where('user_id', '=', userId)
    .where('observer_id', 'is', null)
    .executeTakeFirst();
  return Number(row?.position ?? 0);
}
