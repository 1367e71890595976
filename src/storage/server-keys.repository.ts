import { sql } from 'kysely';
import type { JsonObject } from '../protocol/json.ts';
import type { Executor } from './accounts.repository.ts';
import type { RemoteServerKeyRow, ServerSigningKeyRow } from './database.ts';

/** Signing keys: this server's own (`server_signing_keys`) and other servers' (migration 0006). */

// ---------------------------------------------------------------------------------------------
// Our own keys

export function listOwnKeys(db: Executor): Promise<ServerSigningKeyRow[]> {
  return db.selectFrom('server_signing_keys').selectAll().orderBy('created_ts').orderBy('key_id').execute();
}

/** The oldest unexpired key, so that processes racing at first start agree on one. */
export function currentOwnKey(db: Executor): Promise<ServerSigningKeyRow | undefined> {
  return db
    .selectFrom('server_signing_keys')
    .selectAll()
    .where('expired_ts', 'is', null)
    .orderBy('created_ts')
    .orderBy('key_id')
    .limit(1)
    .executeTakeFirst();
}

export async function insertOwnKey(
  db: Executor,
  row: { key_id: string; seed: string; public_key: string; created_ts: number },
): Promise<void> {
  await db
    .insertInto('server_signing_keys')
    .values({ ...row, expired_ts: null })
    .onConflict((oc) => oc.column('key_id').doNothing())
    .execute();
}

/** Makes `keyId` current again (a key file naming a key that was retired). */
export async function unexpireOwnKey(db: Executor, keyId: string): Promise<void> {
  await db.updateTable('server_signing_keys').set({ expired_ts: null }).where('key_id', '=', keyId).execute();
}

/** Marks every current key but `keepKeyId` as expired at `ts`. */
export async function expireOwnKeys(db: Executor, ts: number, keepKeyId: string): Promise<void> {
  await db
    .updateTable('server_signing_keys')
    .set({ expired_ts: ts })
    .where('expired_ts', 'is', null)
    .where('key_id', '!=', keepKeyId)
    .execute();
}

// ---------------------------------------------------------------------------------------------
// Other servers' keys

export function remoteKeys(db: Executor, serverName: string): Promise<RemoteServerKeyRow[]> {
  return db.selectFrom('remote_server_keys').selectAll().where('server_name', '=', serverName).execute();
}

/**
 * Records keys from a verified response. A key's validity only grows (an older response from a
 * notary cannot shorten it) and its expiry only moves earlier.
 */
export async function upsertRemoteKeys(db: Executor, rows: RemoteServerKeyRow[]): Promise<void> {
  if (rows.length === 0) return;
  await db
    .insertInto('remote_server_keys')
    .values(rows)
    .onConflict((oc) =>
      oc.columns(['server_name', 'key_id']).doUpdateSet({
        public_key: (eb) => eb.ref('excluded.public_key'),
        valid_until_ts: sql`greatest(remote_server_keys.valid_until_ts, excluded.valid_until_ts)`,
        expired_ts: sql`least(remote_server_keys.expired_ts, excluded.expired_ts)`,
        fetched_ts: (eb) => eb.ref('excluded.fetched_ts'),
        fetched_from: (eb) => eb.ref('excluded.fetched_from'),
      }),
    )
    .execute();
}

export interface StoredKeyResponse {
  response: JsonObject;
  validUntilTs: number;
  fetchedTs: number;
}

export async function keyResponse(db: Executor, serverName: string): Promise<StoredKeyResponse | undefined> {
  const row = await db
    .selectFrom('remote_server_key_responses')
    .selectAll()
    .where('server_name', '=', serverName)
    .executeTakeFirst();
  if (!row) return undefined;
  return {
    response: JSON.parse(row.response) as JsonObject,
    validUntilTs: row.valid_until_ts,
    fetchedTs: row.fetched_ts,
  };
}

/** Keeps the response that stays valid longest. */
export async function putKeyResponse(
  db: Executor,
  serverName: string,
  stored: StoredKeyResponse,
): Promise<void> {
  await db
    .insertInto('remote_server_key_responses')
    .values({
      server_name: serverName,
      response: JSON.stringify(stored.response),
      valid_until_ts: stored.validUntilTs,
      fetched_ts: stored.fetchedTs,
    })
    .onConflict((oc) =>
      oc
        .column('server_name')
        .doUpdateSet({
          response: (eb) => eb.ref('excluded.response'),
          valid_until_ts: (eb) => eb.ref('excluded.valid_until_ts'),
          fetched_ts: (eb) => eb.ref('excluded.fetched_ts'),
        })
        .where('remote_server_key_responses.valid_until_ts', '<=', (eb) => eb.ref('excluded.valid_until_ts')),
    )
    .execute();
}
