import { decodeBase64 } from '../../protocol/base64.ts';
import { verifyEventSignature } from '../../protocol/event-signing.ts';
import type { JsonObject, JsonValue } from '../../protocol/json.ts';
import type { RoomVersion } from '../../protocol/room-versions.ts';
import { isValidKeyId, signingKeyIds, verifyJsonSignature } from '../../protocol/signing.ts';
import { requestSigningObject, type XMatrixAuthorization } from '../../protocol/x-matrix.ts';
import type { ServerKeysService } from '../../services/server-keys.service.ts';
import type { Db } from '../../storage/connect.ts';
import type { RemoteServerKeyRow } from '../../storage/database.ts';
import * as repo from '../../storage/server-keys.repository.ts';
import type { KeyFetcher } from './fetchers.ts';
import { checkKeyResponse } from './key-response.ts';

/** How long a failed key lookup is not repeated. */
export const MISS_BACKOFF_MS = 30_000;
const MAX_MISSES = 10_000;

export type Verdict = { ok: true } | { ok: false; reason: string };

/** What the event pipeline needs of the key ring. */
export interface EventSignatureVerifier {
  /** Checks the event's signatures by each of `servers` with keys valid at `atTs`. */
  verifyEvent(pdu: object, rv: RoomVersion, servers: string[], atTs: number): Promise<Verdict>;
}

/**
 * What a key is good for. Requests need a key the server lists as current now; events need a
 * key that was valid when the event was sent (room versions 5 and later: the key's validity
 * must reach the event's origin_server_ts; an old key only verifies events from before it
 * expired).
 */
export type KeyPurpose = { kind: 'request' } | { kind: 'event'; enforceValidUntil: boolean };

interface KnownKey {
  publicKey: Uint8Array;
  validUntilTs: number | null;
  expiredTs: number | null;
}

function usable(key: KnownKey, atTs: number, purpose: KeyPurpose): boolean {
  if (purpose.kind === 'request') return key.expiredTs === null && (key.validUntilTs ?? -1) >= atTs;
  if (key.expiredTs !== null && atTs >= key.expiredTs) return false;
  if (purpose.enforceValidUntil && key.validUntilTs !== null && key.validUntilTs < atTs) return false;
  return true;
}

/**
 * Other servers' verify keys, and checking signatures with them: a chain of sources tried in
 * order, the database first (keys fetched before), then each fetcher (the server directly, then
 * the configured notaries). Every fetched response is checked (self-signed, right server) and
 * cached, valid at most 7 days. This server's own keys come from its key table, without a request.
 */
export class KeyRing implements EventSignatureVerifier {
  private readonly inFlight = new Map<string, Promise<string[]>>();
  /** When a round last failed to find a key (server + key ID), or to reach a server at all. */
  private readonly misses = new Map<string, number>();

  constructor(
    private readonly db: Db,
    private readonly own: ServerKeysService,
    private readonly fetchers: KeyFetcher[],
    private readonly now: () => number = Date.now,
  ) {}

  get serverName(): string {
    return this.own.serverName;
  }

  /** The public key `serverName` used as `keyId`, if it is usable at `atTs` for `purpose`. */
  async getKey(
    serverName: string,
    keyId: string,
    atTs: number,
    purpose: KeyPurpose,
    opts: { fetchers?: KeyFetcher[] } = {},
  ): Promise<{ ok: true; publicKey: Uint8Array } | { ok: false; reason: string }> {
    if (!isValidKeyId(keyId)) return { ok: false, reason: `${keyId} is not an ed25519 key ID` };
    if (serverName === this.own.serverName) {
      const mine = (await this.own.verifyKeys()).find((k) => k.keyId === keyId);
      if (!mine) return { ok: false, reason: `this server has no key ${keyId}` };
      const known = {
        publicKey: mine.publicKey,
        validUntilTs: Number.MAX_SAFE_INTEGER,
        expiredTs: mine.expiredTs,
      };
      return usable(known, atTs, purpose)
        ? { ok: true, publicKey: mine.publicKey }
        : { ok: false, reason: `key ${keyId} of this server is not valid at ${atTs}` };
    }
    const stored = await this.storedKey(serverName, keyId);
    if (stored && usable(stored, atTs, purpose)) return { ok: true, publicKey: stored.publicKey };
    // Ask for keys valid at least until the moment the signature needs (or now, for requests).
    const failures = await this.fetch(serverName, keyId, Math.max(atTs, 0), opts.fetchers ?? this.fetchers);
    const fetched = await this.storedKey(serverName, keyId);
    if (fetched && usable(fetched, atTs, purpose)) return { ok: true, publicKey: fetched.publicKey };
    const why = fetched
      ? `key ${keyId} of ${serverName} is not valid at ${atTs}` +
        (fetched.expiredTs !== null
          ? ` (expired at ${fetched.expiredTs})`
          : ` (valid until ${fetched.validUntilTs})`)
      : `no key ${keyId} of ${serverName} could be found`;
    return { ok: false, reason: failures.length > 0 ? `${why}: ${failures.join('; ')}` : why };
  }

  /** Checks an X-Matrix request signature: the key must be one of the origin's current keys. */
  async verifyRequest(
    auth: XMatrixAuthorization,
    request: { method: string; uri: string; destination: string; content?: JsonValue },
  ): Promise<Verdict> {
    const key = await this.getKey(auth.origin, auth.key, this.now(), { kind: 'request' });
    if (!key.ok) return key;
    const signed = {
      ...requestSigningObject({
        method: request.method,
        uri: request.uri,
        origin: auth.origin,
        destination: request.destination,
        ...(request.content !== undefined ? { content: request.content } : {}),
      }),
      signatures: { [auth.origin]: { [auth.key]: auth.sig } },
    };
    return verifyJsonSignature(signed, auth.origin, auth.key, key.publicKey)
      ? { ok: true }
      : { ok: false, reason: `the signature by ${auth.key} of ${auth.origin} does not match the request` };
  }

  async verifyEvent(pdu: object, rv: RoomVersion, servers: string[], atTs: number): Promise<Verdict> {
    // Room versions 1 to 4 ignore valid_until_ts; every later one enforces it (rooms/v5).
    const purpose: KeyPurpose = { kind: 'event', enforceValidUntil: rv.enforceKeyValidity };
    for (const server of new Set(servers)) {
      const keyIds = signingKeyIds(pdu, server).filter(isValidKeyId);
      if (keyIds.length === 0)
        return { ok: false, reason: `the event has no ed25519 signature by ${server}` };
      const reasons: string[] = [];
      let verified = false;
      for (const keyId of keyIds) {
        const key = await this.getKey(server, keyId, atTs, purpose);
        if (!key.ok) {
          reasons.push(key.reason);
          continue;
        }
        if (verifyEventSignature(pdu, rv, server, keyId, key.publicKey)) {
          verified = true;
          break;
        }
        reasons.push(`the signature by ${keyId} of ${server} does not verify`);
      }
      if (!verified) return { ok: false, reason: reasons.join('; ') };
    }
    return { ok: true };
  }

  /**
   * The key responses of `serverName` valid until at least `minimumValidUntilTs`, for answering
   * notary queries: from the cache when fresh enough, else fetched (through `fetchers`); a stale
   * cached response is still returned when the server cannot be reached.
   */
  async keyResponsesFor(
    serverName: string,
    minimumValidUntilTs: number,
    fetchers: KeyFetcher[],
  ): Promise<JsonObject[]> {
    const cached = await repo.keyResponse(this.db, serverName);
    if (cached && cached.validUntilTs >= minimumValidUntilTs) return [cached.response];
    await this.fetch(serverName, null, minimumValidUntilTs, fetchers);
    const now = await repo.keyResponse(this.db, serverName);
    return now ? [now.response] : [];
  }

  private async storedKey(serverName: string, keyId: string): Promise<KnownKey | undefined> {
    const row = (await repo.remoteKeys(this.db, serverName)).find((r) => r.key_id === keyId);
    return (
      row && {
        publicKey: decodeBase64(row.public_key),
        validUntilTs: row.valid_until_ts,
        expiredTs: row.expired_ts,
      }
    );
  }

  /**
   * Asks the fetchers in turn until one yields a valid response holding `keyId` (any valid
   * response when `keyId` is null), storing every valid response. Concurrent fetches for one
   * server share one round. Returns why fetchers failed.
   */
  private async fetch(
    serverName: string,
    keyId: string | null,
    minimumValidUntilTs: number,
    fetchers: KeyFetcher[],
  ): Promise<string[]> {
    // After a failed round, the same key (or an unreachable server) is not asked for again for a
    // while: a stream of requests naming unknown keys must not turn into a stream of fetches.
    const now = this.now();
    for (const missKey of [`${serverName}\u0000${keyId ?? ''}`, serverName]) {
      const at = this.misses.get(missKey);
      if (at !== undefined && now - at < MISS_BACKOFF_MS) {
        return [
          `the last attempt failed ${Math.round((now - at) / 1000)} s ago; retrying after ${MISS_BACKOFF_MS / 1000} s`,
        ];
      }
    }
    const flightKey = `${serverName}\u0000${keyId ?? ''}\u0000${fetchers.length}`;
    const running = this.inFlight.get(flightKey);
    if (running) return running;
    const round = this.fetchRound(serverName, keyId, minimumValidUntilTs, fetchers).finally(() =>
      this.inFlight.delete(flightKey),
    );
    this.inFlight.set(flightKey, round);
    return round;
  }

  private noteMiss(key: string): void {
    if (this.misses.size >= MAX_MISSES) this.misses.delete(this.misses.keys().next().value!);
    this.misses.set(key, this.now());
  }

  private async fetchRound(
    serverName: string,
    keyId: string | null,
    minimumValidUntilTs: number,
    fetchers: KeyFetcher[],
  ): Promise<string[]> {
    const failures: string[] = [];
    let found = false;
    let reached = false;
    for (const fetcher of fetchers) {
      const source = fetcher.source(serverName);
      let responses: JsonObject[];
      try {
        responses = await fetcher.fetch(serverName, keyId !== null ? [keyId] : [], minimumValidUntilTs);
      } catch (err) {
        failures.push(`${source}: ${(err as Error).message}`);
        continue;
      }
      reached = true;
      for (const response of responses) {
        const fetchedTs = this.now();
        const checked = checkKeyResponse(response, serverName, fetchedTs);
        if (!checked.ok) {
          failures.push(`${source}: ${checked.reason}`);
          continue;
        }
        const rows: RemoteServerKeyRow[] = checked.keys.map((k) => ({
          server_name: serverName,
          key_id: k.keyId,
          public_key: k.key,
          valid_until_ts: k.validUntilTs,
          expired_ts: k.expiredTs,
          fetched_ts: fetchedTs,
          fetched_from: source,
        }));
        await this.db.transaction().execute(async (tx) => {
          await repo.upsertRemoteKeys(tx, rows);
          await repo.putKeyResponse(tx, serverName, {
            response: checked.response,
            validUntilTs: checked.validUntilTs,
            fetchedTs,
          });
        });
        if (keyId === null || checked.keys.some((k) => k.keyId === keyId)) found = true;
      }
      if (found) break;
      if (responses.length === 0) failures.push(`${source}: no keys`);
      else if (keyId !== null) failures.push(`${source}: no key ${keyId}`);
    }
    if (!found) this.noteMiss(`${serverName}\u0000${keyId ?? ''}`);
    if (!reached && fetchers.length > 0) this.noteMiss(serverName);
    return failures;
  }
}
