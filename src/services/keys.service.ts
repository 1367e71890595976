import type { Config } from '../config.ts';
import { errors, MatrixError } from '../errors.ts';
import { parseUserId } from '../protocol/identifiers.ts';
import { isJsonObject, type JsonObject, type JsonValue } from '../protocol/json.ts';
import { findDevice } from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';
import type { CrossSigningSignatureRow, CrossSigningUsage } from '../storage/database.ts';
import { latestDeviceListStreamId } from '../storage/e2ee-edus.repository.ts';
import * as repo from '../storage/keys.repository.ts';
import type { Notifier } from '../streams/notifier.ts';
import { nextPosition } from '../streams/positions.ts';
import type { AccountsService, Session } from './accounts.service.ts';
import type { DeviceLists } from './device-lists.ts';
import {
  type CheckedDeviceKeys,
  checkCrossSigningKey,
  checkDeviceKeys,
  isKey32,
  sameJson,
  unsignedPart,
  verifySignedBy,
  withSignatures,
} from './e2e-key-checks.ts';
import { DEFAULT_KEYS_TIMEOUT_MS, type RemoteKeys } from './remote-keys.service.ts';
import { inBatches, LIMITS, YIELD_EVERY, yieldToEventLoop } from './request-limits.ts';
import { parseSyncToken } from './sync.service.ts';

/**
 * End-to-end encryption keys (client-server API: End-to-End Encryption, Cross-signing): device
 * identity keys, one-time and fallback keys, cross-signing keys and signatures. The server cannot
 * read encrypted messages, but it is the directory clients trust for each other's keys, so it
 * checks every signature it can before publishing a key (spec/e2ee.md lists each check).
 */

/** The only signed one-time key algorithm Matrix defines; its keys must be signed by the device. */
export const SIGNED_CURVE25519 = 'signed_curve25519';

const USAGES: readonly CrossSigningUsage[] = ['master', 'self_signing', 'user_signing'];
const KEY_FIELD: Record<CrossSigningUsage, 'master_key' | 'self_signing_key' | 'user_signing_key'> = {
  master: 'master_key',
  self_signing: 'self_signing_key',
  user_signing: 'user_signing_key',
};

export interface KeysUploadRequest {
  device_keys?: JsonObject;
  one_time_keys?: Record<string, JsonValue>;
  fallback_keys?: Record<string, JsonValue>;
}

export interface CrossSigningUploadRequest {
  master_key?: JsonObject;
  self_signing_key?: JsonObject;
  user_signing_key?: JsonObject;
}

type Failures = Record<string, JsonObject>;

/** Sends m.signing_key_update for a local user to the servers sharing a room with them. */
export type SigningKeyUpdates = (
  userId: string,
  keys: { master_key?: JsonObject; self_signing_key?: JsonObject },
) => Promise<void>;

interface QueryAnswer {
  device_keys: Record<string, Record<string, JsonObject>>;
  master_keys: Record<string, JsonObject>;
  self_signing_keys: Record<string, JsonObject>;
}

function checkClaimSize(wanted: Record<string, Record<string, string>>): void {
  const named = Object.values(wanted).reduce((n, devices) => n + Object.keys(devices).length, 0);
  if (named > LIMITS.keysClaimDevices) {
    throw errors.tooLarge(`At most ${LIMITS.keysClaimDevices} devices per key claim`);
  }
}

function checkQuerySize(deviceKeys: Record<string, string[]>): void {
  if (Object.keys(deviceKeys).length > LIMITS.keysQueryUsers) {
    throw errors.tooLarge(`At most ${LIMITS.keysQueryUsers} users per key query`);
  }
  if (Object.values(deviceKeys).reduce((n, ids) => n + ids.length, 0) > LIMITS.keysQueryDevices) {
    throw errors.tooLarge(`At most ${LIMITS.keysQueryDevices} device IDs per key query`);
  }
}

export class KeysService {
  private remote: RemoteKeys | undefined;

  /** Keys of users of other servers come through `remote` from now on (set once federation is built). */
  setRemote(remote: RemoteKeys): void {
    this.remote = remote;
  }

  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly accounts: AccountsService,
    private readonly deviceLists: DeviceLists,
    private readonly notifier: Notifier,
    private readonly now: () => number = Date.now,
  ) {}

  // -------------------------------------------------------------------------------------------
  // POST /keys/upload

  /** Publishes the device's identity keys and adds one-time and fallback keys. */
  async upload(
    session: Session,
    req: KeysUploadRequest,
  ): Promise<{ one_time_key_counts: Record<string, number> }> {
    const { userId, deviceId } = session;
    const keyCount =
      Object.keys(req.one_time_keys ?? {}).length + Object.keys(req.fallback_keys ?? {}).length;
    if (keyCount > LIMITS.keysUploadKeys) {
      throw errors.tooLarge(`At most ${LIMITS.keysUploadKeys} one-time and fallback keys per upload`);
    }
    const stored = await repo.getDeviceKeys(this.db, userId, deviceId);
    let identity = stored && { ed25519: stored.ed25519, curve25519: stored.curve25519 };
    let newDeviceKeys: { keys: JsonObject; ed25519: string; curve25519: string | null } | undefined;
    if (req.device_keys !== undefined) {
      const checked = await this.checkUploadedDeviceKeys(session, req.device_keys);
      if (stored) {
        if (stored.ed25519 !== checked.ed25519 || stored.curve25519 !== checked.curve25519) {
          throw errors.forbidden("A device's identity keys cannot change once published");
        }
      }
      identity = { ed25519: checked.ed25519, curve25519: checked.curve25519 };
      if (!stored || !sameJson(stored.keys, checked.keys)) newDeviceKeys = checked;
    }
    const oneTimeKeys = await this.checkOneTimeKeys(session, req.one_time_keys, identity?.ed25519, false);
    const fallbackKeys = await this.checkOneTimeKeys(session, req.fallback_keys, identity?.ed25519, true);
    const fallbackAlgorithms = new Set<string>();
    for (const k of fallbackKeys) {
      if (fallbackAlgorithms.has(k.algorithm)) {
        throw errors.invalidParam(`Only one fallback key per algorithm may be uploaded (${k.algorithm})`);
      }
      fallbackAlgorithms.add(k.algorithm);
    }

    const position = await this.db.transaction().execute(async (trx) => {
      await inBatches(oneTimeKeys, async (batch) => {
        const existing = await repo.existingOneTimeKeys(trx, userId, deviceId, batch);
        for (const k of batch) {
          const old = existing.get(`${k.algorithm}:${k.keyId}`);
          if (old !== undefined && !sameJson(JSON.parse(old), k.key)) {
            throw errors.invalidParam(
              `One-time key ${k.algorithm}:${k.keyId} already exists with other content`,
            );
          }
        }
        await repo.insertOneTimeKeys(trx, userId, deviceId, batch);
      });
      for (const k of fallbackKeys) {
        const old = await repo.getFallbackKey(trx, userId, deviceId, k.algorithm);
        // The same key again keeps its used mark; a new one replaces it.
        if (old && old.keyId === k.keyId && sameJson(JSON.parse(old.keyJson), k.key)) continue;
        await repo.putFallbackKey(trx, userId, deviceId, k);
      }
      if (!newDeviceKeys) return undefined;
      // Another request of the same device may have published keys meanwhile: check again here.
      const now = await repo.getDeviceKeys(trx, userId, deviceId);
      if (now && (now.ed25519 !== newDeviceKeys.ed25519 || now.curve25519 !== newDeviceKeys.curve25519)) {
        throw errors.forbidden("A device's identity keys cannot change once published");
      }
      await repo.putDeviceKeys(trx, { userId, deviceId, ...newDeviceKeys }, this.now());
      return this.deviceLists.recordChange(trx, userId);
    });
    if (position !== undefined) await this.deviceLists.announceDevices(userId, position, [deviceId]);
    else if (oneTimeKeys.length > 0 || fallbackKeys.length > 0) {
      // Nothing for other users' syncs (no position), but every process must drop the key counts
      // it keeps for this device's syncs.
      await this.notifier.notify({ kind: 'keys', userIds: [userId] });
    }
    return { one_time_key_counts: await this.oneTimeKeyCounts(userId, deviceId) };
  }

  /** Checks device keys as /keys/upload requires them; returns what to store. */
  private async checkUploadedDeviceKeys(session: Session, dk: JsonObject): Promise<CheckedDeviceKeys> {
    const { userId, deviceId } = session;
    const checked = checkDeviceKeys(dk, userId, deviceId);
    // Device IDs and cross-signing public keys share one namespace in signatures.
    const crossSigning = await repo.crossSigningKeysOf(this.db, [userId]);
    if (crossSigning.some((k) => k.publicKey === deviceId)) {
      throw errors.forbidden('The device ID is the public key of a cross-signing key');
    }
    // Kept: what the device uploaded, without anything a server adds on query.
    return checked;
  }

  /**
   * Checks one-time or fallback keys; signed_curve25519 keys must verify with the device key.
   * Other requests get a turn every YIELD_EVERY keys.
   */
  private async checkOneTimeKeys(
    session: Session,
    keys: Record<string, JsonValue> | undefined,
    ed25519: string | undefined,
    fallback: boolean,
  ): Promise<repo.OneTimeKey[]> {
    const what = fallback ? 'Fallback' : 'One-time';
    const out: repo.OneTimeKey[] = [];
    for (const [name, key] of Object.entries(keys ?? {})) {
      if (out.length % YIELD_EVERY === YIELD_EVERY - 1) await yieldToEventLoop();
      const colon = name.indexOf(':');
      if (colon <= 0 || colon === name.length - 1 || name.length > 255) {
        throw errors.invalidParam(`${what} key names must be <algorithm>:<key id>`);
      }
      const algorithm = name.slice(0, colon);
      const keyId = name.slice(colon + 1);
      if (typeof key !== 'string' && !isJsonObject(key)) {
        throw errors.badJson(`${what} key ${name} must be a string or an object`);
      }
      if (algorithm === SIGNED_CURVE25519) {
        if (!isJsonObject(key) || typeof key.key !== 'string' || !isKey32(key.key)) {
          throw errors.invalidParam(`${what} key ${name} must be an object with a 32-byte key`);
        }
        if (ed25519 === undefined) {
          throw errors.invalidParam(
            `Upload the device keys before (or with) signed ${what.toLowerCase()} keys`,
          );
        }
        if (!verifySignedBy(key, session.userId, `ed25519:${session.deviceId}`, ed25519)) {
          throw errors.invalidSignature(`${what} key ${name} is not signed by the device's ed25519 key`);
        }
      }
      out.push({ algorithm, keyId, key });
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // POST /keys/query

  /**
   * The keys of users of this server (as `session`'s user sees them) and, through RemoteKeys, of
   * users of other servers (each server within `timeoutMs`; those that fail are in `failures`).
   */
  async query(
    session: Session,
    deviceKeys: Record<string, string[]>,
    timeoutMs: number = DEFAULT_KEYS_TIMEOUT_MS,
  ): Promise<QueryAnswer & { user_signing_keys: Record<string, JsonObject>; failures: Failures }> {
    checkQuerySize(deviceKeys);
    const failures: Failures = {};
    const local: string[] = [];
    const remote: Record<string, string[]> = {};
    for (const userId of Object.keys(deviceKeys)) {
      const parsed = parseUserId(userId);
      if (!parsed) throw errors.invalidParam('device_keys must be keyed by user IDs');
      if (parsed.serverName === this.config.serverName) local.push(userId);
      else if (this.remote) remote[userId] = deviceKeys[userId]!;
      else failures[parsed.serverName] = unreachable();
    }
    const [out, fromRemote] = await Promise.all([
      this.localKeys(local, deviceKeys, session.userId),
      this.remote && Object.keys(remote).length > 0
        ? this.remote.query(session.userId, remote, timeoutMs)
        : undefined,
    ]);
    if (fromRemote) {
      Object.assign(out.device_keys, fromRemote.device_keys);
      Object.assign(out.master_keys, fromRemote.master_keys);
      Object.assign(out.self_signing_keys, fromRemote.self_signing_keys);
      Object.assign(failures, fromRemote.failures);
    }
    return { ...out, user_signing_keys: out.user_signing_keys, failures };
  }

  /**
   * POST /_matrix/federation/v1/user/keys/query: the keys of this server's users for another
   * server. Users of other servers are left out (the spec: requested users must be local).
   * Signatures other users made are not included (each is visible to its signer only), nor are
   * user-signing keys.
   */
  async federationQuery(deviceKeys: Record<string, string[]>): Promise<QueryAnswer> {
    checkQuerySize(deviceKeys);
    const local = Object.keys(deviceKeys).filter(
      (userId) => parseUserId(userId)?.serverName === this.config.serverName,
    );
    const { user_signing_keys: _usk, ...out } = await this.localKeys(local, deviceKeys, null);
    return out;
  }

  /**
   * GET /_matrix/federation/v1/user/devices/{userId}: every device of a local user that has
   * published keys, with its display name (the spec: device display names are public), the master
   * and self-signing keys, and the user's device list stream_id (the stream position of the
   * latest change of their device list; m.device_list_update EDUs use the same numbers).
   */
  async userDevices(userId: string): Promise<{
    user_id: string;
    stream_id: number;
    devices: Array<{ device_id: string; keys: JsonObject; device_display_name?: string }>;
    master_key?: JsonObject;
    self_signing_key?: JsonObject;
  }> {
    const [answer, position, outbound] = await Promise.all([
      this.localKeys([userId], { [userId]: [] }, null),
      repo.latestDeviceListPosition(this.db, userId),
      latestDeviceListStreamId(this.db, userId),
    ]);
    // At or above every m.device_list_update made so far: a server that resyncs takes the
    // updates after this answer, and ignores those it already holds.
    const streamId = Math.max(position, outbound);
    const devices = Object.entries(answer.device_keys[userId] ?? {}).map(([deviceId, keys]) => {
      const { unsigned, ...signed } = keys;
      const name = isJsonObject(unsigned) ? unsigned.device_display_name : undefined;
      return {
        device_id: deviceId,
        keys: signed,
        ...(typeof name === 'string' ? { device_display_name: name } : {}),
      };
    });
    const master = answer.master_keys[userId];
    const selfSigning = answer.self_signing_keys[userId];
    return {
      user_id: userId,
      stream_id: streamId,
      devices,
      ...(master ? { master_key: master } : {}),
      ...(selfSigning ? { self_signing_key: selfSigning } : {}),
    };
  }

  /**
   * What other servers are told of some of a local user's devices (m.device_list_update): for
   * each, its published keys (with the user's own signatures on them) and display name, or that
   * it is gone.
   */
  async deviceStates(
    userId: string,
    deviceIds: readonly string[],
  ): Promise<Map<string, { deleted: true } | { deleted: false; keys?: JsonObject; displayName?: string }>> {
    const published = await this.userDevices(userId);
    const out = new Map<
      string,
      { deleted: true } | { deleted: false; keys?: JsonObject; displayName?: string }
    >();
    for (const deviceId of new Set(deviceIds)) {
      const row = await findDevice(this.db, userId, deviceId);
      if (!row) {
        out.set(deviceId, { deleted: true });
        continue;
      }
      const keys = published.devices.find((d) => d.device_id === deviceId)?.keys;
      out.set(deviceId, {
        deleted: false,
        ...(keys ? { keys } : {}),
        ...(row.display_name !== null ? { displayName: row.display_name } : {}),
      });
    }
    return out;
  }

  /**
   * The keys of local users: each device (or the listed ones) with `unsigned.device_display_name`
   * and the uploaded signatures `viewer` may see, master and self-signing keys, and the viewer's
   * own user-signing key. Every listed user has a `device_keys` entry.
   */
  private async localKeys(
    local: readonly string[],
    deviceKeys: Record<string, string[]>,
    viewer: string | null,
  ): Promise<QueryAnswer & { user_signing_keys: Record<string, JsonObject> }> {
    const devices: repo.StoredDeviceKeys[] = [];
    const crossSigning: repo.StoredCrossSigningKey[] = [];
    const signatures: CrossSigningSignatureRow[] = [];
    await inBatches([...local], async (batch) => {
      const [d, c, sig] = await Promise.all([
        repo.listDeviceKeys(this.db, batch),
        repo.crossSigningKeysOf(this.db, batch),
        repo.signaturesOn(this.db, batch),
      ]);
      devices.push(...d);
      crossSigning.push(...c);
      signatures.push(...sig);
    });

    const out = {
      device_keys: {} as Record<string, Record<string, JsonObject>>,
      master_keys: {} as Record<string, JsonObject>,
      self_signing_keys: {} as Record<string, JsonObject>,
      user_signing_keys: {} as Record<string, JsonObject>,
    };
    for (const userId of local) out.device_keys[userId] = {};
    for (const d of devices) {
      const wanted = deviceKeys[d.userId] ?? [];
      if (wanted.length > 0 && !wanted.includes(d.deviceId)) continue;
      const keys = withSignatures(d.keys, d.userId, d.deviceId, signatures, viewer);
      keys.unsigned = d.displayName !== null ? { device_display_name: d.displayName } : {};
      out.device_keys[d.userId]![d.deviceId] = keys;
    }
    for (const k of crossSigning) {
      if (k.usage === 'master') {
        out.master_keys[k.userId] = withSignatures(k.key, k.userId, k.publicKey, signatures, viewer);
      } else if (k.usage === 'self_signing') {
        out.self_signing_keys[k.userId] = k.key;
      } else if (k.userId === viewer) {
        out.user_signing_keys[k.userId] = k.key;
      }
    }
    return out;
  }

  /**
   * The devices of each (local) user whose device keys carry a valid signature by that user's
   * current self-signing key: the devices the user has verified with cross-signing. The
   * signature is checked here, against the stored device keys, not only trusted from upload; a
   * signature by an earlier self-signing key does not count. Users without a self-signing key
   * have no such device.
   */
  async crossSignedDevices(userIds: readonly string[]): Promise<Map<string, Set<string>>> {
    const out = new Map<string, Set<string>>();
    await inBatches([...new Set(userIds)], async (batch) => {
      const [crossSigning, devices, signatures] = await Promise.all([
        repo.crossSigningKeysOf(this.db, batch),
        repo.listDeviceKeys(this.db, batch),
        repo.signaturesOn(this.db, batch),
      ]);
      const selfSigning = new Map(
        crossSigning.filter((k) => k.usage === 'self_signing').map((k) => [k.userId, k.publicKey]),
      );
      for (const d of devices) {
        const ssk = selfSigning.get(d.userId);
        if (ssk === undefined) continue;
        const keys = withSignatures(d.keys, d.userId, d.deviceId, signatures, d.userId);
        if (verifySignedBy(keys, d.userId, `ed25519:${ssk}`, ssk)) {
          out.set(d.userId, (out.get(d.userId) ?? new Set()).add(d.deviceId));
        }
      }
    });
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // POST /keys/claim

  /**
   * Claims one key per requested device and algorithm: the oldest one-time key, which is deleted
   * as it is handed out, or else the device's fallback key, marked used but handed out again.
   */
  async claim(
    _session: Session,
    wanted: Record<string, Record<string, string>>,
    timeoutMs: number = DEFAULT_KEYS_TIMEOUT_MS,
  ): Promise<{
    one_time_keys: Record<string, Record<string, Record<string, JsonValue>>>;
    failures: Failures;
  }> {
    checkClaimSize(wanted);
    const failures: Failures = {};
    const requests: repo.KeyClaim[] = [];
    const remote: Record<string, Record<string, string>> = {};
    for (const [userId, devices] of Object.entries(wanted)) {
      const parsed = parseUserId(userId);
      if (!parsed) throw errors.invalidParam('one_time_keys must be keyed by user IDs');
      if (parsed.serverName !== this.config.serverName) {
        if (this.remote) remote[userId] = devices;
        else failures[parsed.serverName] = unreachable();
        continue;
      }
      for (const [deviceId, algorithm] of Object.entries(devices))
        requests.push({ userId, deviceId, algorithm });
    }
    const [out, fromRemote] = await Promise.all([
      this.claimLocal(requests),
      this.remote && Object.keys(remote).length > 0 ? this.remote.claim(remote, timeoutMs) : undefined,
    ]);
    if (fromRemote) {
      Object.assign(out, fromRemote.one_time_keys);
      Object.assign(failures, fromRemote.failures);
    }
    return { one_time_keys: out, failures };
  }

  /**
   * POST /_matrix/federation/v1/user/keys/claim: claims keys of this server's users for another
   * server; users of other servers are left out (the spec: requested users must be local).
   */
  async federationClaim(
    wanted: Record<string, Record<string, string>>,
  ): Promise<{ one_time_keys: Record<string, Record<string, Record<string, JsonValue>>> }> {
    checkClaimSize(wanted);
    const requests: repo.KeyClaim[] = [];
    for (const [userId, devices] of Object.entries(wanted)) {
      if (parseUserId(userId)?.serverName !== this.config.serverName) continue;
      for (const [deviceId, algorithm] of Object.entries(devices))
        requests.push({ userId, deviceId, algorithm });
    }
    return { one_time_keys: await this.claimLocal(requests) };
  }

  private async claimLocal(
    requests: repo.KeyClaim[],
  ): Promise<Record<string, Record<string, Record<string, JsonValue>>>> {
    if (requests.length === 0) return {};
    // Batches of a few hundred devices, two statements each: the oldest one-time key of every
    // device in the batch, then the fallback key of those that had none.
    const claimed = await this.db.transaction().execute(async (trx) => {
      const got: repo.ClaimedKey[] = [];
      await inBatches(requests, async (batch) => {
        const oneTime = await repo.claimOneTimeKeys(trx, batch);
        const served = new Set(oneTime.map((k) => claimKey(k)));
        const rest = batch.filter((r) => !served.has(claimKey(r)));
        got.push(...oneTime, ...(rest.length > 0 ? await repo.claimFallbackKeys(trx, rest) : []));
      });
      // The claimed devices' key counts (and fallback key state) in their syncs changed.
      const position = got.length > 0 ? await nextPosition(trx) : undefined;
      return {
        got: got.map((k) => ({ ...k, name: `${k.algorithm}:${k.keyId}` })),
        position,
      };
    });
    const out: Record<string, Record<string, Record<string, JsonValue>>> = {};
    for (const k of claimed.got) {
      const byDevice = out[k.userId] ?? {};
      byDevice[k.deviceId] = { ...byDevice[k.deviceId], [k.name]: k.key };
      out[k.userId] = byDevice;
    }
    if (claimed.position !== undefined) {
      await this.notifier.notify({
        kind: 'keys',
        position: claimed.position,
        userIds: [...new Set(claimed.got.map((k) => k.userId))],
      });
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // GET /keys/changes

  async changes(session: Session, from: string, to: string): Promise<{ changed: string[]; left: string[] }> {
    const start = parseSyncToken(from).position;
    const end = parseSyncToken(to).position;
    return this.deviceListChanges(session.userId, start, end);
  }

  // -------------------------------------------------------------------------------------------
  // POST /keys/device_signing/upload

  /**
   * Publishes cross-signing keys after user-interactive authentication with the password, the
   * first upload too; an exact repeat of the stored keys (a retried request) needs none.
   */
  async uploadCrossSigningKeys(
    session: Session,
    req: CrossSigningUploadRequest,
    auth: unknown,
    address: string,
  ): Promise<void> {
    const userId = session.userId;
    const existing = new Map((await repo.crossSigningKeysOf(this.db, [userId])).map((k) => [k.usage, k]));
    const uploads = new Map<CrossSigningUsage, { publicKey: string; key: JsonObject }>();
    for (const usage of USAGES) {
      const key = req[KEY_FIELD[usage]];
      if (key !== undefined) uploads.set(usage, checkCrossSigningKey(key, userId, usage));
    }
    if (uploads.size === 0) return;
    const master = uploads.get('master') ?? existing.get('master');
    for (const usage of ['self_signing', 'user_signing'] as const) {
      const key = uploads.get(usage);
      if (!key) continue;
      if (!master) throw errors.missingParam('No master key to check the other keys against');
      if (!verifySignedBy(key.key, userId, `ed25519:${master.publicKey}`, master.publicKey)) {
        throw errors.invalidSignature(`The ${usage} key must be signed by the master key`);
      }
    }
    const deviceIds = new Set(await repo.deviceIdsOf(this.db, userId));
    for (const [usage, key] of uploads) {
      if (deviceIds.has(key.publicKey)) {
        throw errors.forbidden(`The public key of the ${usage} key is one of your device IDs`);
      }
    }
    // Any other signature of the user's on a key (a device's on the master key, the master key's
    // own) must verify when the server knows the signing key; signatures by unknown keys are kept
    // as uploaded, since nobody can rely on them without the key.
    const devices = new Map(
      (await repo.listDeviceKeys(this.db, [userId])).map((d) => [d.deviceId, d.ed25519]),
    );
    for (const [usage, key] of uploads) {
      const bySigner = isJsonObject(key.key.signatures) ? key.key.signatures[userId] : undefined;
      for (const signerKeyId of Object.keys(isJsonObject(bySigner) ? bySigner : {})) {
        const name = signerKeyId.startsWith('ed25519:') ? signerKeyId.slice('ed25519:'.length) : undefined;
        if (name === undefined) continue;
        const publicKey = name === key.publicKey || name === master?.publicKey ? name : devices.get(name);
        if (publicKey !== undefined && !verifySignedBy(key.key, userId, signerKeyId, publicKey)) {
          throw errors.invalidSignature(
            `The signature by ${signerKeyId} on the ${usage} key does not verify`,
          );
        }
      }
    }

    const changes = [...uploads].filter(([usage, key]) => {
      const old = existing.get(usage);
      return !old || !sameJson(old.key, key.key);
    });
    if (changes.length === 0) return;
    // Stricter than the spec (v1.11 lets a first upload through without UIA): whoever holds a
    // stolen access token must not be able to give a user cross-signing keys of their choosing.
    await this.accounts.withPassword(session, 'device_signing', auth, address, () =>
      this.storeCrossSigningKeys(userId, uploads, existing),
    );
  }

  private async storeCrossSigningKeys(
    userId: string,
    uploads: Map<CrossSigningUsage, { publicKey: string; key: JsonObject }>,
    existing: Map<CrossSigningUsage, repo.StoredCrossSigningKey>,
  ): Promise<void> {
    const position = await this.db.transaction().execute(async (trx) => {
      const now = this.now();
      const masterReplaced =
        uploads.has('master') && existing.get('master')?.publicKey !== uploads.get('master')!.publicKey;
      for (const usage of USAGES) {
        const key = uploads.get(usage);
        const old = existing.get(usage);
        let gone = key && old && old.publicKey !== key.publicKey ? old : undefined;
        if (key) {
          await repo.putCrossSigningKey(trx, { userId, usage, ...key }, now);
        } else if (masterReplaced && old) {
          // Signed by the master key being replaced: no longer valid.
          await repo.deleteCrossSigningKey(trx, userId, usage);
          gone = old;
        }
        if (gone) {
          // Signatures made by, or on, a key that is gone mean nothing any more.
          await repo.deleteSignaturesBy(trx, userId, [`ed25519:${gone.publicKey}`]);
          if (usage === 'master') await repo.deleteSignaturesOn(trx, userId, [gone.publicKey]);
        }
      }
      return this.deviceLists.recordChange(trx, userId);
    });
    await this.deviceLists.announce(userId, position);
    // Other servers learn of the new master and self-signing keys (never the user-signing key,
    // which only its owner sees) through m.signing_key_update.
    const master = uploads.get('master');
    const selfSigning = uploads.get('self_signing');
    if (master || selfSigning) {
      await this.signingKeyUpdates(userId, {
        ...(master ? { master_key: master.key } : {}),
        ...(selfSigning ? { self_signing_key: selfSigning.key } : {}),
      });
    }
  }

  /**
   * The seam for the outbound m.signing_key_update EDU: called after a local user's master or
   * self-signing key changed, with the EDU's content apart from user_id. A no-op until the EDU
   * sender is plugged in with setSigningKeyUpdates.
   */
  private signingKeyUpdates: SigningKeyUpdates = async () => {};

  setSigningKeyUpdates(send: SigningKeyUpdates): void {
    this.signingKeyUpdates = send;
  }

  // -------------------------------------------------------------------------------------------
  // POST /keys/signatures/upload

  /**
   * Stores signatures on keys: the user's own devices (by their self-signing key), their own master
   * key (by one of their devices), and other users' master keys (by their user-signing key). Each
   * key is judged on its own; a refused one is reported in failures and nothing of it is stored.
   */
  async uploadSignatures(
    session: Session,
    body: Record<string, Record<string, JsonObject>>,
  ): Promise<{ failures: Failures }> {
    const me = session.userId;
    const objects = Object.values(body).reduce((n, keys) => n + Object.keys(keys).length, 0);
    if (objects > LIMITS.signatureUploads) {
      throw errors.tooLarge(`At most ${LIMITS.signatureUploads} signed keys per signature upload`);
    }
    const failures: Failures = {};
    const fail = (userId: string, keyId: string, err: MatrixError) => {
      failures[userId] = { ...failures[userId], [keyId]: { errcode: err.errcode, error: err.message } };
    };
    const local: string[] = [];
    const remote: string[] = [];
    for (const userId of Object.keys(body)) {
      const parsed = parseUserId(userId);
      if (!parsed) throw errors.invalidParam('The body must be keyed by user IDs');
      if (parsed.serverName === this.config.serverName) local.push(userId);
      else remote.push(userId);
    }
    const [crossSigning, devices, remoteMasters] = await Promise.all([
      repo.crossSigningKeysOf(this.db, [...new Set([me, ...local])]),
      repo.listDeviceKeys(this.db, [me]),
      // Remote users' master keys as their servers publish them (the cache for users who share a
      // room with one of ours).
      this.remote && remote.length > 0
        ? this.remote.masterKeys(remote, DEFAULT_KEYS_TIMEOUT_MS)
        : new Map<string, { publicKey: string; key: JsonObject }>(),
    ]);
    const csk = (user: string, usage: CrossSigningUsage) =>
      usage === 'master' && remoteMasters.has(user)
        ? { userId: user, usage, ...remoteMasters.get(user)! }
        : crossSigning.find((k) => k.userId === user && k.usage === usage);

    const accepted: CrossSigningSignatureRow[] = [];
    const observed = new Set<string>();
    let ownChanged = false;
    /** Own devices and master key signed: other servers are sent them again. */
    const ownDevicesSigned = new Set<string>();
    let ownMasterSigned = false;
    let checked = 0;
    for (const [target, keys] of Object.entries(body)) {
      for (const [keyId, signed] of Object.entries(keys)) {
        if (++checked % YIELD_EVERY === 0) await yieldToEventLoop();
        try {
          if (!local.includes(target) && !this.remote)
            throw errors.invalidParam('Signatures on keys of remote users need federation');
          let stored: JsonObject;
          let signers: Map<string, string>; // signer key ID -> public key
          if (target === me) {
            const device = devices.find((d) => d.deviceId === keyId);
            const master = csk(me, 'master');
            if (device) {
              const ssk = csk(me, 'self_signing');
              if (!ssk) throw errors.invalidSignature('Upload a self-signing key before signing devices');
              stored = device.keys;
              signers = new Map([[`ed25519:${ssk.publicKey}`, ssk.publicKey]]);
            } else if (master && master.publicKey === keyId) {
              stored = master.key;
              signers = new Map(devices.map((d) => [`ed25519:${d.deviceId}`, d.ed25519]));
            } else {
              throw errors.notFound('No such device or master key');
            }
          } else {
            // Another user's master key, local or remote, by the uploader's user-signing key.
            const master = csk(target, 'master');
            if (!master || master.publicKey !== keyId) throw errors.notFound('No such master key');
            const usk = csk(me, 'user_signing');
            if (!usk) throw errors.invalidSignature('Upload a user-signing key before signing other users');
            stored = master.key;
            signers = new Map([[`ed25519:${usk.publicKey}`, usk.publicKey]]);
          }
          if (!isJsonObject(signed) || !sameJson(unsignedPart(signed), unsignedPart(stored))) {
            throw errors.invalidSignature('The signed object does not match the stored key');
          }
          const mine = isJsonObject(signed.signatures) ? signed.signatures[me] : undefined;
          const rows: CrossSigningSignatureRow[] = [];
          for (const [signerKeyId, signature] of Object.entries(isJsonObject(mine) ? mine : {})) {
            const publicKey = signers.get(signerKeyId);
            if (publicKey === undefined) {
              // Signatures the object already carried (the device's own, say) are not new; any
              // other key may not sign this one.
              const present = isJsonObject(stored.signatures) ? stored.signatures[me] : undefined;
              if (isJsonObject(present) && present[signerKeyId] === signature) continue;
              throw errors.invalidSignature(`${signerKeyId} may not sign this key`);
            }
            if (
              typeof signature !== 'string' ||
              !verifySignedBy(
                { ...stored, signatures: { [me]: { [signerKeyId]: signature } } },
                me,
                signerKeyId,
                publicKey,
              )
            ) {
              throw errors.invalidSignature(`Invalid signature by ${signerKeyId}`);
            }
            rows.push({
              signer_user_id: me,
              signer_key_id: signerKeyId,
              target_user_id: target,
              target_key_id: keyId,
              signature,
            });
          }
          if (rows.length === 0) throw errors.invalidSignature('No new signature by the uploader');
          accepted.push(...rows);
          if (target === me) {
            ownChanged = true;
            if (devices.some((d) => d.deviceId === keyId)) ownDevicesSigned.add(keyId);
            else ownMasterSigned = true;
          } else observed.add(target);
        } catch (err) {
          if (!(err instanceof MatrixError)) throw err;
          fail(target, keyId, err);
        }
      }
    }
    if (accepted.length === 0) return { failures };

    const written = await this.db.transaction().execute(async (trx) => {
      for (const row of accepted) await repo.putSignature(trx, row);
      const announcements: Array<{ userId: string; position: number; observer: string | null }> = [];
      if (ownChanged)
        announcements.push({
          userId: me,
          position: await this.deviceLists.recordChange(trx, me),
          observer: null,
        });
      for (const target of observed) {
        announcements.push({
          userId: target,
          position: await this.deviceLists.recordChange(trx, target, me),
          observer: me,
        });
      }
      return announcements;
    });
    for (const a of written) {
      if (a.observer === null && a.userId === me) {
        await this.deviceLists.announceDevices(me, a.position, [...ownDevicesSigned]);
      } else await this.deviceLists.announce(a.userId, a.position, a.observer);
    }
    if (ownMasterSigned) {
      // The master key with its new signatures (by the user's devices) goes to other servers.
      const master = (await this.userDevices(me)).master_key;
      if (master) await this.signingKeyUpdates(me, { master_key: master });
    }
    return { failures };
  }

  // -------------------------------------------------------------------------------------------
  // Read by the sync engine

  /** device_lists of /sync between two stream positions: see DeviceLists.changesBetween. */
  deviceListChanges(
    userId: string,
    from: number,
    upTo: number,
  ): Promise<{ changed: string[]; left: string[] }> {
    return this.deviceLists.changesBetween(userId, from, upTo);
  }

  /** device_one_time_keys_count: unclaimed one-time keys per algorithm (signed_curve25519 always listed). */
  async oneTimeKeyCounts(userId: string, deviceId: string): Promise<Record<string, number>> {
    return { [SIGNED_CURVE25519]: 0, ...(await repo.countOneTimeKeys(this.db, userId, deviceId)) };
  }

  /** device_unused_fallback_key_types: algorithms whose fallback key has not been claimed yet. */
  unusedFallbackKeyTypes(userId: string, deviceId: string): Promise<string[]> {
    return repo.unusedFallbackAlgorithms(this.db, userId, deviceId);
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** What /keys/query answers for a server it cannot reach (Conclave does not federate yet). */
function unreachable(): JsonObject {
  return { status: 503, message: 'Federation is not supported by this server yet' };
}

function claimKey(k: { userId: string; deviceId: string }): string {
  return JSON.stringify([k.userId, k.deviceId]);
}
