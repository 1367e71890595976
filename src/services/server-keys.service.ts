import { randomBytes } from 'node:crypto';
import { decodeBase64, encodeBase64 } from '../protocol/base64.ts';
import { generateSigningKey, type SigningKey, signingKeyFromSeed, signJson } from '../protocol/signing.ts';
import type { Db } from '../storage/connect.ts';

/** How long other servers may cache our published keys. */
export const KEY_VALIDITY_MS = 7 * 24 * 60 * 60 * 1000;

/**
 * The server's own ed25519 signing key: generated on first start, kept in the database so that
 * every process of the homeserver signs with the same key and it survives restarts.
 */
export class ServerKeysService {
  private current: SigningKey | undefined;

  constructor(
    private readonly db: Db,
    readonly serverName: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** Loads the current key, creating it when there is none. Safe when processes race. */
  async init(): Promise<SigningKey> {
    let row = await this.loadCurrentRow();
    if (!row) {
      const key = generateSigningKey(`ed25519:a_${randomBytes(3).toString('base64url').replace(/-/g, '_')}`);
      await this.db
        .insertInto('server_signing_keys')
        .values({
          key_id: key.keyId,
          seed: encodeBase64(key.seed),
          public_key: encodeBase64(key.publicKey),
          created_ts: this.now(),
          expired_ts: null,
        })
        .execute();
      row = await this.loadCurrentRow();
    }
    if (!row) throw new Error('could not create the server signing key');
    this.current = signingKeyFromSeed(row.key_id, decodeBase64(row.seed));
    return this.current;
  }

  /** The oldest unexpired key wins, so two processes that race at first start agree. */
  private loadCurrentRow() {
    return this.db
      .selectFrom('server_signing_keys')
      .selectAll()
      .where('expired_ts', 'is', null)
      .orderBy('created_ts')
      .orderBy('key_id')
      .limit(1)
      .executeTakeFirst();
  }

  get key(): SigningKey {
    if (!this.current) throw new Error('ServerKeysService.init() has not run');
    return this.current;
  }

  /** Signs a JSON object as this server. */
  sign<T extends object>(object: T) {
    return signJson(object, this.serverName, this.key.keyId, this.key.seed);
  }

  /** The body of GET /_matrix/key/v2/server: current and old verify keys, self-signed. */
  async publishedKeys() {
    const rows = await this.db.selectFrom('server_signing_keys').selectAll().execute();
    const verify_keys: Record<string, { key: string }> = {};
    const old_verify_keys: Record<string, { key: string; expired_ts: number }> = {};
    for (const row of rows) {
      if (row.expired_ts === null) verify_keys[row.key_id] = { key: row.public_key };
      else old_verify_keys[row.key_id] = { key: row.public_key, expired_ts: row.expired_ts };
    }
    return this.sign({
      server_name: this.serverName,
      valid_until_ts: this.now() + KEY_VALIDITY_MS,
      verify_keys,
      old_verify_keys,
    });
  }
}
