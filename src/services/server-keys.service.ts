import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { decodeBase64, encodeBase64 } from '../protocol/base64.ts';
import {
  decodeKey,
  generateSigningKey,
  isValidKeyId,
  type SigningKey,
  signingKeyFromSeed,
  signJson,
} from '../protocol/signing.ts';
import type { Db } from '../storage/connect.ts';
import * as repo from '../storage/server-keys.repository.ts';

/** How long other servers may cache our published keys. */
export const KEY_VALIDITY_MS = 7 * 24 * 60 * 60 * 1000;

/** One of our verify keys as others see it: current, or retired at `expiredTs`. */
export interface OwnVerifyKey {
  keyId: string;
  publicKey: Uint8Array;
  expiredTs: number | null;
}

/**
 * The server's own ed25519 signing keys: generated on first start (or read from
 * `signing_key_path`), kept in the database so that every process of the homeserver signs with
 * the same key and it survives restarts. Rotation retires the current key to `old_verify_keys`,
 * where it still verifies what it signed.
 */
export class ServerKeysService {
  private current: SigningKey | undefined;
  private first: Uint8Array | undefined;
  private known: OwnVerifyKey[] = [];

  /**
   * Our verify keys as of start-up or the last rotation in this process, without a query (the
   * event pipeline checks our own signatures inside room transactions with them).
   */
  get cachedVerifyKeys(): readonly OwnVerifyKey[] {
    return this.known;
  }

  constructor(
    private readonly db: Db,
    readonly serverName: string,
    private readonly now: () => number = Date.now,
    /** A key file (`ed25519 <version> <base64 seed>`) that names the current key. */
    private readonly signingKeyPath = '',
  ) {}

  /** Loads the current key, creating it when there is none. Safe when processes race. */
  async init(): Promise<SigningKey> {
    if (this.signingKeyPath !== '') {
      const key = readSigningKeyFile(this.signingKeyPath);
      await this.db.transaction().execute(async (tx) => {
        await repo.insertOwnKey(tx, {
          key_id: key.keyId,
          seed: encodeBase64(key.seed),
          public_key: encodeBase64(key.publicKey),
          created_ts: this.now(),
        });
        await repo.unexpireOwnKey(tx, key.keyId);
        await repo.expireOwnKeys(tx, this.now(), key.keyId);
      });
    }
    let row = await repo.currentOwnKey(this.db);
    if (!row) {
      const key = generateSigningKey(newKeyId());
      await repo.insertOwnKey(this.db, {
        key_id: key.keyId,
        seed: encodeBase64(key.seed),
        public_key: encodeBase64(key.publicKey),
        created_ts: this.now(),
      });
      row = await repo.currentOwnKey(this.db);
    }
    if (!row) throw new Error('could not create the server signing key');
    this.current = signingKeyFromSeed(row.key_id, decodeBase64(row.seed));
    this.first = decodeBase64((await repo.listOwnKeys(this.db))[0]!.public_key);
    this.known = await this.verifyKeys();
    return this.current;
  }

  /**
   * The public key of the first key this server ever had: unlike the current key it survives
   * rotation, so it can name the server's own bus channels.
   */
  get firstPublicKey(): Uint8Array {
    if (!this.first) throw new Error('ServerKeysService.init() has not run');
    return this.first;
  }

  get key(): SigningKey {
    if (!this.current) throw new Error('ServerKeysService.init() has not run');
    return this.current;
  }

  /** Signs a JSON object as this server. */
  sign<T extends object>(object: T) {
    return signJson(object, this.serverName, this.key.keyId, this.key.seed);
  }

  /**
   * Retires the current key (it moves to `old_verify_keys`, expired now) and makes a new one
   * current. Other processes of this server pick the new key up when they restart.
   */
  async rotate(): Promise<{ previous: string; current: string }> {
    if (this.signingKeyPath !== '') {
      throw new Error('the signing key comes from signing_key_path: replace that file to rotate');
    }
    const previous = this.key.keyId;
    const key = generateSigningKey(newKeyId());
    const ts = this.now();
    await this.db.transaction().execute(async (tx) => {
      await repo.insertOwnKey(tx, {
        key_id: key.keyId,
        seed: encodeBase64(key.seed),
        public_key: encodeBase64(key.publicKey),
        // Later than every existing key, so it is the one currentOwnKey picks.
        created_ts: ts,
      });
      await repo.expireOwnKeys(tx, ts, key.keyId);
    });
    this.current = key;
    this.known = await this.verifyKeys();
    return { previous, current: key.keyId };
  }

  /** Every verify key this server has had, for checking our own signatures without a request. */
  async verifyKeys(): Promise<OwnVerifyKey[]> {
    return (await repo.listOwnKeys(this.db)).map((row) => ({
      keyId: row.key_id,
      publicKey: decodeBase64(row.public_key),
      expiredTs: row.expired_ts,
    }));
  }

  /** The body of GET /_matrix/key/v2/server: current and old verify keys, self-signed. */
  async publishedKeys() {
    const verify_keys: Record<string, { key: string }> = {};
    const old_verify_keys: Record<string, { key: string; expired_ts: number }> = {};
    for (const key of await this.verifyKeys()) {
      const text = encodeBase64(key.publicKey);
      if (key.expiredTs === null) verify_keys[key.keyId] = { key: text };
      else old_verify_keys[key.keyId] = { key: text, expired_ts: key.expiredTs };
    }
    return this.sign({
      server_name: this.serverName,
      valid_until_ts: this.now() + KEY_VALIDITY_MS,
      verify_keys,
      old_verify_keys,
    });
  }
}

function newKeyId(): string {
  return `ed25519:a_${randomBytes(3).toString('base64url').replace(/-/g, '_')}`;
}

/**
 * Reads a signing key file: one line `ed25519 <version> <unpadded base64 seed>` (the format
 * Synapse and others write, so a key can move between implementations).
 */
export function readSigningKeyFile(path: string): SigningKey {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`signing_key_path: cannot read ${path}: ${(err as Error).message}`);
  }
  return parseSigningKey(text);
}

export function parseSigningKey(text: string): SigningKey {
  const parts = text.trim().split(/\s+/);
  const keyId = `${parts[0]}:${parts[1]}`;
  if (parts.length !== 3 || !isValidKeyId(keyId)) {
    throw new Error('a signing key file holds one line: ed25519 <version> <base64 seed>');
  }
  return signingKeyFromSeed(keyId, decodeKey(parts[2]!));
}

export function formatSigningKey(key: SigningKey): string {
  return `${key.keyId.replace(':', ' ')} ${encodeBase64(key.seed)}\n`;
}
