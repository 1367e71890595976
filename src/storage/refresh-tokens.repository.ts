import type { Executor } from './accounts.repository.ts';

/** Refresh tokens (spec/account.md): rows by SHA-256, never the token itself. */

export function findRefreshToken(db: Executor, tokenHash: string) {
  return db
    .selectFrom('refresh_tokens')
    .innerJoin('users', 'users.user_id', 'refresh_tokens.user_id')
    .select([
      'refresh_tokens.token_hash',
      'refresh_tokens.user_id',
      'refresh_tokens.device_id',
      'refresh_tokens.previous_hash',
      'refresh_tokens.expires_ts',
      'users.deactivated',
      'users.locked',
    ])
    .where('refresh_tokens.token_hash', '=', tokenHash)
    .forUpdate('refresh_tokens')
    .executeTakeFirst();
}

export async function insertRefreshToken(
  db: Executor,
  row: {
    token_hash: string;
    user_id: string;
    device_id: string;
    previous_hash: string | null;
    created_ts: number;
    expires_ts: number | null;
  },
): Promise<void> {
  await db.insertInto('refresh_tokens').values(row).execute();
}

/** Deletes refresh tokens and the access tokens given with them. */
export async function deleteRefreshTokens(db: Executor, tokenHashes: string[]): Promise<void> {
  if (tokenHashes.length === 0) return;
  await db.deleteFrom('access_tokens').where('refresh_token_hash', 'in', tokenHashes).execute();
  await db.deleteFrom('refresh_tokens').where('token_hash', 'in', tokenHashes).execute();
}

/** The refresh tokens issued in exchange for this one (a refresh the client repeats). */
export async function successorsOf(db: Executor, tokenHash: string): Promise<string[]> {
  const rows = await db
    .selectFrom('refresh_tokens')
    .select('token_hash')
    .where('previous_hash', '=', tokenHash)
    .execute();
  return rows.map((r) => r.token_hash);
}

/**
 * The first use of a refresh token or of its access token: the refresh token it replaced (and
 * that one's access token) go. Returns whether this call retired it (false when another did).
 */
export async function retirePrevious(
  db: Executor,
  tokenHash: string,
  previousHash: string,
): Promise<boolean> {
  const r = await db
    .updateTable('refresh_tokens')
    .set({ previous_hash: null })
    .where('token_hash', '=', tokenHash)
    .where('previous_hash', '=', previousHash)
    .executeTakeFirst();
  await deleteRefreshTokens(db, [previousHash]);
  return Number(r.numUpdatedRows) > 0;
}
