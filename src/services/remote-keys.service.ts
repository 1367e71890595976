import { MatrixError } from '../errors.ts';
import type { FederationClient } from '../federation/client/federation-client.ts';
import { FederationError } from '../federation/client/transport.ts';
import { parseUserId } from '../protocol/identifiers.ts';
import { isJsonObject, type JsonObject, type JsonValue } from '../protocol/json.ts';
import type { Db } from '../storage/connect.ts';
import * as keysRepo from '../storage/keys.repository.ts';
import * as repo from '../storage/remote-keys.repository.ts';
import type { DeviceLists } from './device-lists.ts';
import {
  checkCrossSigningKey,
  checkDeviceKeys,
  isKey32,
  sameJson,
  verifySignedBy,
  withSignatures,
} from './e2e-key-checks.ts';

/**
 * End-to-end keys of users of other servers (server-server API: Device Management, End-to-End
 * Encryption). Two ways in:
 *
 * - A cache of the device lists and cross-signing keys of remote users who share a room with a
 *   user of this server ("tracked" users), filled and refreshed by a resync (GET /user/devices)
 *   when unknown or stale, and kept current by m.device_list_update and m.signing_key_update
 *   EDUs (applyDeviceListUpdate, applySigningKeyUpdate: one call per EDU). Every change of a
 *   cached list is recorded in the device list stream, so /sync and /keys/changes report it.
 * - For users nobody here shares a room with, POST /user/keys/query to their server on each
 *   query, not cached (no EDU would keep it current).
 *
 * Whatever another server answers is checked as a local upload is (spec/e2ee.md): a server
 * answers only for its own users, device keys must name their user and device and carry a valid
 * self-signature, cross-signing keys must belong to the user and the self-signing key must be
 * signed by the master key. What fails is dropped, never served.
 */

/** The spec's default for the `timeout` of /keys/query and /keys/claim. */
export const DEFAULT_KEYS_TIMEOUT_MS = 10_000;
/** Devices kept per remote user: more in an answer are dropped. */
export const MAX_REMOTE_DEVICES = 1000;
/** Longest device display name taken from another server. */
const MAX_DISPLAY_NAME = 1000;
/** Resyncs of one server's users running at once during a query. */
const RESYNC_CONCURRENCY = 8;

const V1 = '/_matrix/federation/v1';

type Failures = Record<string, JsonObject>;

export interface RemoteQueryAnswer {
  device_keys: Record<string, Record<string, JsonObject>>;
  master_keys: Record<string, JsonObject>;
  self_signing_keys: Record<string, JsonObject>;
  failures: Failures;
}

export interface RemoteClaimAnswer {
  one_time_keys: Record<string, Record<string, Record<string, JsonValue>>>;
  failures: Failures;
}

/** What became of an EDU handed to applyDeviceListUpdate / applySigningKeyUpdate. */
export type UpdateOutcome =
  /** The cache now holds the update. */
  | 'applied'
  /** Nothing to do: an update already held, or for a user nobody here shares a room with. */
  | 'ignored'
  /** The copy is marked stale and a resync is under way (a gap, or the user was not cached). */
  | 'resync'
  /** Refused: malformed, from a server that is not the user's, or keys that fail the checks. */
  | 'refused';

/** What RemoteKeys needs of the federation client. */
export type KeysFederationClient = Pick<FederationClient, 'request'>;

export class RemoteKeys {
  private readonly resyncing = new Map<string, Promise<boolean>>();
  private readonly background = new Set<Promise<unknown>>();

  constructor(
    private readonly db: Db,
    private readonly serverName: string,
    private readonly client: KeysFederationClient,
    private readonly deviceLists: DeviceLists,
    private readonly now: () => number = Date.now,
  ) {}

  // -------------------------------------------------------------------------------------------
  // POST /keys/query for users of other servers

  /**
   * The keys of remote users, as `viewer` sees them (with the signatures `viewer` made on their
   * master keys). Tracked users come from the cache, resynced first when unknown or stale;
   * the others from their server's /user/keys/query. Requests go to every server at once, each
   * within `timeoutMs`; a server that fails is listed in `failures` (a stale copy of a tracked
   * user is still served then).
   */
  async query(
    viewer: string,
    wanted: Record<string, string[]>,
    timeoutMs: number,
  ): Promise<RemoteQueryAnswer> {
    const out: RemoteQueryAnswer = { device_keys: {}, master_keys: {}, self_signing_keys: {}, failures: {} };
    const userIds = Object.keys(wanted);
    if (userIds.length === 0) return out;
    const tracked = await repo.sharingRoomWithLocalUser(this.db, userIds, this.serverName);
    const states = await repo.listStates(this.db, [...tracked]);
    // Users no longer tracked lose their cached copy (no update would reach it any more).
    const untrackedCached = await repo.listStates(
      this.db,
      userIds.filter((u) => !tracked.has(u)),
    );
    if (untrackedCached.size > 0) await repo.deleteLists(this.db, [...untrackedCached.keys()]);

    const byServer = new Map<string, { resync: string[]; direct: Record<string, string[]> }>();
    for (const userId of userIds) {
      const server = parseUserId(userId)!.serverName;
      const entry = byServer.get(server) ?? { resync: [], direct: {} };
      byServer.set(server, entry);
      if (!tracked.has(userId)) entry.direct[userId] = wanted[userId]!;
      else {
        const state = states.get(userId);
        if (!state || state.stale) entry.resync.push(userId);
      }
    }
    const direct: Array<{ server: string; answer: ReturnType<typeof checkQueryAnswer> }> = [];
    await Promise.all(
      [...byServer].map(async ([server, work]) => {
        try {
          await pool(work.resync, RESYNC_CONCURRENCY, async (userId) => {
            if (!(await this.resync(userId, timeoutMs))) throw new ResyncFailed();
          });
        } catch (err) {
          out.failures[server] = failureOf(err);
        }
        if (Object.keys(work.direct).length === 0) return;
        try {
          const body = await this.client.request<Record<string, unknown>>({
            destination: server,
            method: 'POST',
            path: `${V1}/user/keys/query`,
            body: { device_keys: work.direct },
            timeoutMs,
          });
          direct.push({ server, answer: checkQueryAnswer(work.direct, body) });
        } catch (err) {
          out.failures[server] = failureOf(err);
        }
      }),
    );

    const signatures = await keysRepo.signaturesOn(this.db, userIds);
    const sign = (key: JsonObject, userId: string, keyId: string) =>
      withSignatures(key, userId, keyId, signatures, viewer);
    for (const list of await repo.cachedLists(this.db, [...tracked])) {
      const ids = wanted[list.userId] ?? [];
      const devices: Record<string, JsonObject> = {};
      for (const d of list.devices) {
        if (d.keys === null || (ids.length > 0 && !ids.includes(d.deviceId))) continue;
        devices[d.deviceId] = {
          ...d.keys,
          unsigned: d.displayName !== null ? { device_display_name: d.displayName } : {},
        };
      }
      out.device_keys[list.userId] = devices;
      for (const k of list.crossSigning) {
        if (k.usage === 'master') out.master_keys[list.userId] = sign(k.key, list.userId, k.publicKey);
        else out.self_signing_keys[list.userId] = k.key;
      }
    }
    for (const { answer } of direct) {
      Object.assign(out.device_keys, answer.device_keys);
      for (const [userId, k] of Object.entries(answer.master_keys)) {
        out.master_keys[userId] = sign(k.key, userId, k.publicKey);
      }
      for (const [userId, k] of Object.entries(answer.self_signing_keys))
        out.self_signing_keys[userId] = k.key;
    }
    return out;
  }

  /**
   * The current master keys of remote users (for a local user's signature on one): from the cache
   * for tracked users, else from their servers. Users whose server fails are absent.
   */
  async masterKeys(
    userIds: readonly string[],
    timeoutMs: number,
  ): Promise<Map<string, { publicKey: string; key: JsonObject }>> {
    const answer = await this.query('', Object.fromEntries(userIds.map((u) => [u, []])), timeoutMs);
    const out = new Map<string, { publicKey: string; key: JsonObject }>();
    for (const [userId, key] of Object.entries(answer.master_keys)) {
      const publicKey = Object.values(isJsonObject(key.keys) ? key.keys : {})[0];
      if (typeof publicKey === 'string') out.set(userId, { publicKey, key });
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // POST /keys/claim for users of other servers

  /** Claims one-time keys on each server at once (within `timeoutMs`); answers are checked. */
  async claim(wanted: Record<string, Record<string, string>>, timeoutMs: number): Promise<RemoteClaimAnswer> {
    const out: RemoteClaimAnswer = { one_time_keys: {}, failures: {} };
    const byServer = new Map<string, Record<string, Record<string, string>>>();
    for (const [userId, devices] of Object.entries(wanted)) {
      const server = parseUserId(userId)!.serverName;
      byServer.set(server, { ...byServer.get(server), [userId]: devices });
    }
    // The device keys already known here, to check the one-time keys' signatures with.
    const known = new Map<string, string>();
    for (const list of await repo.cachedLists(this.db, Object.keys(wanted))) {
      for (const d of list.devices)
        if (d.ed25519) known.set(JSON.stringify([list.userId, d.deviceId]), d.ed25519);
    }
    await Promise.all(
      [...byServer].map(async ([server, request]) => {
        try {
          const body = await this.client.request<Record<string, unknown>>({
            destination: server,
            method: 'POST',
            path: `${V1}/user/keys/claim`,
            body: { one_time_keys: request },
            timeoutMs,
          });
          Object.assign(out.one_time_keys, checkClaimAnswer(request, body, known));
        } catch (err) {
          out.failures[server] = failureOf(err);
        }
      }),
    );
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // The cache

  /**
   * Fetches the user's whole device list from their server (GET /user/devices) and replaces the
   * cached copy with it, recording a device list change when the copy changed. Concurrent calls
   * for one user share one request. False when the server could not be reached or answered
   * something unusable (the copy, if any, stays and stays stale).
   */
  resync(userId: string, timeoutMs: number = DEFAULT_KEYS_TIMEOUT_MS): Promise<boolean> {
    const running = this.resyncing.get(userId);
    if (running) return running;
    const task = this.doResync(userId, timeoutMs).finally(() => this.resyncing.delete(userId));
    this.resyncing.set(userId, task);
    return task;
  }

  private async doResync(userId: string, timeoutMs: number): Promise<boolean> {
    const parsed = parseUserId(userId);
    if (!parsed || parsed.serverName === this.serverName) return false;
    let list: repo.RemoteDeviceList;
    try {
      const body = await this.client.request<Record<string, unknown>>({
        destination: parsed.serverName,
        method: 'GET',
        path: `${V1}/user/devices/${encodeURIComponent(userId)}`,
        timeoutMs,
      });
      list = checkDevicesAnswer(userId, body);
    } catch (err) {
      if (err instanceof FederationError || err instanceof MatrixError) return false;
      throw err;
    }
    await this.store(list);
    return true;
  }

  /** Writes a resynced list, recording a change when an earlier copy differed. */
  private async store(list: repo.RemoteDeviceList): Promise<void> {
    const [old] = await repo.cachedLists(this.db, [list.userId]);
    const changed = old !== undefined && !sameContents(old, list);
    const position = await this.db.transaction().execute(async (trx) => {
      await repo.putListState(
        trx,
        { userId: list.userId, streamId: list.streamId, stale: false },
        this.now(),
      );
      if (old && !changed) return undefined;
      await repo.replaceContents(trx, list.userId, list.devices, list.crossSigning);
      const oldMaster = old?.crossSigning.find((k) => k.usage === 'master');
      const newMaster = list.crossSigning.find((k) => k.usage === 'master');
      if (oldMaster && oldMaster.publicKey !== newMaster?.publicKey) {
        // Our users' signatures on a master key that is gone mean nothing any more.
        await keysRepo.deleteSignaturesOn(trx, list.userId, [oldMaster.publicKey]);
      }
      return changed ? this.deviceLists.recordChange(trx, list.userId) : undefined;
    });
    if (position !== undefined) await this.deviceLists.announce(list.userId, position);
  }

  /**
   * Marks users' cached lists stale (the next query resyncs them first) and records a change so
   * that clients query again. For the EDU side too: a user whose updates cannot be trusted.
   */
  async markStale(userIds: readonly string[]): Promise<void> {
    const marked = await this.db.transaction().execute(async (trx) => {
      const users = await repo.markStale(trx, userIds);
      const positions: Array<[string, number]> = [];
      for (const u of users) positions.push([u, await this.deviceLists.recordChange(trx, u)]);
      return positions;
    });
    for (const [u, position] of marked) await this.deviceLists.announce(u, position);
  }

  /** Runs a resync in the background (an EDU handler must not wait for another server). */
  private resyncLater(userId: string): void {
    const task = this.resync(userId).catch(() => false);
    this.background.add(task);
    void task.finally(() => this.background.delete(task));
  }

  /** Resolves once the resyncs started in the background have ended (for tests and shutdown). */
  async settled(): Promise<void> {
    while (this.background.size > 0) await Promise.all([...this.background]);
  }

  /**
   * Applies one m.device_list_update EDU's content, received from `origin`.
   *
   * - Refused unless `origin` is the user's server and the content is well formed.
   * - Ignored for a user nobody here shares a room with (their copy, if any, is dropped) and for
   *   an update the copy already holds (`stream_id` at or below the copy's).
   * - A user not cached yet, a copy already stale, or a gap (a `prev_id` above the copy's
   *   `stream_id`: an update we never received) marks the copy stale, records a change and starts
   *   a resync in the background.
   * - Otherwise the device is replaced (or deleted with `deleted`) after its keys pass the checks
   *   of an upload (keys that fail mark the copy stale instead), the copy's `stream_id` becomes the
   *   update's, and the change is recorded.
   */
  async applyDeviceListUpdate(origin: string, content: JsonValue): Promise<UpdateOutcome> {
    const update = parseDeviceListUpdate(origin, content);
    if (!update) return 'refused';
    const { userId } = update;
    const tracked = await repo.sharingRoomWithLocalUser(this.db, [userId], this.serverName);
    if (!tracked.has(userId)) {
      await repo.deleteLists(this.db, [userId]);
      return 'ignored';
    }
    const state = (await repo.listStates(this.db, [userId])).get(userId);
    if (state && !state.stale && update.streamId <= state.streamId) return 'ignored';
    const gap = !state || state.stale || update.prevIds.some((p) => p > state.streamId);
    let device: repo.RemoteDevice | undefined;
    if (!gap && !update.deleted) {
      try {
        const checked =
          update.keys === undefined ? undefined : checkDeviceKeys(update.keys, userId, update.deviceId);
        device = {
          deviceId: update.deviceId,
          keys: checked?.keys ?? null,
          ed25519: checked?.ed25519 ?? null,
          displayName: update.displayName,
        };
      } catch (err) {
        if (!(err instanceof MatrixError)) throw err;
      }
    }
    if (gap || (!update.deleted && !device)) {
      await this.staleAndResync(userId, state !== undefined);
      return 'resync';
    }
    const position = await this.db.transaction().execute(async (trx) => {
      await repo.putListState(trx, { userId, streamId: update.streamId, stale: false }, this.now());
      if (update.deleted) {
        await repo.deleteDevice(trx, userId, update.deviceId);
        await keysRepo.deleteSignaturesOn(trx, userId, [update.deviceId]);
      } else await repo.putDevice(trx, userId, device!);
      return this.deviceLists.recordChange(trx, userId);
    });
    await this.deviceLists.announce(userId, position);
    return 'applied';
  }

  /**
   * Applies one m.signing_key_update EDU's content, received from `origin`: the user's new master
   * and/or self-signing key. Refused unless `origin` is the user's server and every key passes
   * the checks of an upload (it belongs to the user, has its usage and one ed25519 key; the
   * self-signing key is signed by the master key, the new one or the cached one). A replaced
   * master key takes the cached self-signing key (signed by it) and our users' signatures on it
   * along. Ignored for users nobody here shares a room with; a user not cached yet is resynced.
   */
  async applySigningKeyUpdate(origin: string, content: JsonValue): Promise<UpdateOutcome> {
    if (!isJsonObject(content) || typeof content.user_id !== 'string') return 'refused';
    const userId = content.user_id;
    const parsed = parseUserId(userId);
    if (!parsed || parsed.serverName !== origin || origin === this.serverName) return 'refused';
    const tracked = await repo.sharingRoomWithLocalUser(this.db, [userId], this.serverName);
    if (!tracked.has(userId)) {
      await repo.deleteLists(this.db, [userId]);
      return 'ignored';
    }
    const [cached] = await repo.cachedLists(this.db, [userId]);
    let master: repo.RemoteCrossSigningKey | undefined;
    let selfSigning: repo.RemoteCrossSigningKey | undefined;
    try {
      if (content.master_key !== undefined) {
        master = { usage: 'master', ...checkCrossSigningKey(content.master_key, userId, 'master') };
      }
      if (content.self_signing_key !== undefined) {
        const checked = checkCrossSigningKey(content.self_signing_key, userId, 'self_signing');
        const signer = master ?? cached?.crossSigning.find((k) => k.usage === 'master');
        if (
          !signer ||
          !verifySignedBy(checked.key, userId, `ed25519:${signer.publicKey}`, signer.publicKey)
        ) {
          return 'refused';
        }
        selfSigning = { usage: 'self_signing', ...checked };
      }
    } catch (err) {
      if (err instanceof MatrixError) return 'refused';
      throw err;
    }
    if (!master && !selfSigning) return 'ignored';
    if (!cached || cached.stale) {
      await this.staleAndResync(userId, cached !== undefined);
      return 'resync';
    }
    const oldMaster = cached.crossSigning.find((k) => k.usage === 'master');
    const position = await this.db.transaction().execute(async (trx) => {
      if (master) {
        await repo.putCrossSigningKey(trx, userId, master);
        if (oldMaster && oldMaster.publicKey !== master.publicKey) {
          await keysRepo.deleteSignaturesOn(trx, userId, [oldMaster.publicKey]);
          if (!selfSigning) await repo.deleteCrossSigningKey(trx, userId, 'self_signing');
        }
      }
      if (selfSigning) await repo.putCrossSigningKey(trx, userId, selfSigning);
      return this.deviceLists.recordChange(trx, userId);
    });
    await this.deviceLists.announce(userId, position);
    return 'applied';
  }

  private async staleAndResync(userId: string, cached: boolean): Promise<void> {
    if (cached) await this.markStale([userId]);
    else {
      // Not cached yet: clients learn of the change, and the resync fills the cache.
      const position = await this.db
        .transaction()
        .execute((trx) => this.deviceLists.recordChange(trx, userId));
      await this.deviceLists.announce(userId, position);
    }
    this.resyncLater(userId);
  }
}

// ---------------------------------------------------------------------------------------------
// Checking what other servers answer

class ResyncFailed extends Error {}

function failureOf(err: unknown): JsonObject {
  if (err instanceof FederationError) {
    return {
      status: err.status ?? 503,
      message:
        err.kind === 'timeout'
          ? 'The server did not answer in time'
          : 'The server could not be reached or answered an error',
    };
  }
  if (err instanceof ResyncFailed || err instanceof MatrixError) {
    return { status: 503, message: 'The server could not be reached or answered something unusable' };
  }
  throw err;
}

/** Runs `fn` over `items`, at most `limit` at once; the first failure is thrown after all end. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown;
  let failed = false;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        if (!failed) {
          failed = true;
          failure = err;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed) throw failure;
}

function displayNameOf(value: unknown): string | null {
  return typeof value === 'string' && value.length <= MAX_DISPLAY_NAME ? value : null;
}

/** The device keys of an answer, checked: one entry per kept device, with its display name. */
function checkedDevice(
  userId: string,
  deviceId: string,
  keys: JsonValue,
  displayName: string | null,
): repo.RemoteDevice | undefined {
  try {
    const checked = checkDeviceKeys(keys, userId, deviceId);
    return { deviceId, keys: checked.keys, ed25519: checked.ed25519, displayName };
  } catch (err) {
    if (err instanceof MatrixError) return undefined;
    throw err;
  }
}

/** The master and self-signing keys of an answer that pass the checks (the SSK signed by the master). */
function checkedCrossSigning(
  userId: string,
  masterKey: unknown,
  selfSigningKey: unknown,
): repo.RemoteCrossSigningKey[] {
  const out: repo.RemoteCrossSigningKey[] = [];
  let master: { publicKey: string; key: JsonObject } | undefined;
  try {
    if (masterKey !== undefined) master = checkCrossSigningKey(masterKey as JsonValue, userId, 'master');
  } catch (err) {
    if (!(err instanceof MatrixError)) throw err;
  }
  if (!master) return out;
  out.push({ usage: 'master', ...master });
  try {
    if (selfSigningKey !== undefined) {
      const ssk = checkCrossSigningKey(selfSigningKey as JsonValue, userId, 'self_signing');
      if (verifySignedBy(ssk.key, userId, `ed25519:${master.publicKey}`, master.publicKey)) {
        out.push({ usage: 'self_signing', ...ssk });
      }
    }
  } catch (err) {
    if (!(err instanceof MatrixError)) throw err;
  }
  return out;
}

/** Checks a GET /user/devices answer for `userId`; throws a MatrixError when it is unusable. */
export function checkDevicesAnswer(userId: string, body: Record<string, unknown>): repo.RemoteDeviceList {
  if (body.user_id !== userId) throw new MatrixError(502, 'M_UNKNOWN', 'The answer is for another user');
  const streamId = body.stream_id;
  if (typeof streamId !== 'number' || !Number.isSafeInteger(streamId) || streamId < 0) {
    throw new MatrixError(502, 'M_UNKNOWN', 'The answer has no valid stream_id');
  }
  if (!Array.isArray(body.devices)) throw new MatrixError(502, 'M_UNKNOWN', 'The answer has no devices');
  const devices: repo.RemoteDevice[] = [];
  const seen = new Set<string>();
  const crossSigning = checkedCrossSigning(userId, body.master_key, body.self_signing_key);
  const crossSigningKeys = new Set(crossSigning.map((k) => k.publicKey));
  for (const d of body.devices as unknown[]) {
    if (devices.length >= MAX_REMOTE_DEVICES) break;
    if (!isJsonObject(d as JsonValue)) continue;
    const entry = d as JsonObject;
    const deviceId = entry.device_id;
    if (typeof deviceId !== 'string' || deviceId.length > 255 || seen.has(deviceId)) continue;
    // Device IDs and cross-signing public keys share one namespace in signatures.
    if (crossSigningKeys.has(deviceId)) continue;
    const device = checkedDevice(
      userId,
      deviceId,
      entry.keys as JsonValue,
      displayNameOf(entry.device_display_name),
    );
    if (!device) continue;
    seen.add(deviceId);
    devices.push(device);
  }
  return { userId, streamId, stale: false, devices, crossSigning };
}

/**
 * Checks a POST /user/keys/query answer to a request for `requested` (users of the server
 * asked): users not asked for (those of other servers among them) and devices not asked for are
 * dropped, as is every key that fails the checks.
 */
export function checkQueryAnswer(
  requested: Record<string, string[]>,
  body: Record<string, unknown>,
): {
  device_keys: Record<string, Record<string, JsonObject>>;
  master_keys: Record<string, { publicKey: string; key: JsonObject }>;
  self_signing_keys: Record<string, { publicKey: string; key: JsonObject }>;
} {
  const out = {
    device_keys: {} as Record<string, Record<string, JsonObject>>,
    master_keys: {} as Record<string, { publicKey: string; key: JsonObject }>,
    self_signing_keys: {} as Record<string, { publicKey: string; key: JsonObject }>,
  };
  const deviceKeys = isJsonObject(body.device_keys as JsonValue) ? (body.device_keys as JsonObject) : {};
  const masters = isJsonObject(body.master_keys as JsonValue) ? (body.master_keys as JsonObject) : {};
  const selfSigning = isJsonObject(body.self_signing_keys as JsonValue)
    ? (body.self_signing_keys as JsonObject)
    : {};
  for (const userId of Object.keys(requested)) {
    const ids = requested[userId]!;
    const crossSigning = Object.hasOwn(masters, userId)
      ? checkedCrossSigning(
          userId,
          masters[userId],
          Object.hasOwn(selfSigning, userId) ? selfSigning[userId] : undefined,
        )
      : [];
    const csPublic = new Set(crossSigning.map((k) => k.publicKey));
    for (const k of crossSigning) {
      if (k.usage === 'master') out.master_keys[userId] = k;
      else out.self_signing_keys[userId] = k;
    }
    const byDevice = Object.hasOwn(deviceKeys, userId) ? deviceKeys[userId] : undefined;
    if (!isJsonObject(byDevice)) continue;
    const devices: Record<string, JsonObject> = {};
    let kept = 0;
    for (const [deviceId, keys] of Object.entries(byDevice)) {
      if (kept >= MAX_REMOTE_DEVICES) break;
      if ((ids.length > 0 && !ids.includes(deviceId)) || csPublic.has(deviceId)) continue;
      const unsigned = isJsonObject(keys) && isJsonObject(keys.unsigned) ? keys.unsigned : {};
      const device = checkedDevice(userId, deviceId, keys, displayNameOf(unsigned.device_display_name));
      if (!device) continue;
      kept++;
      devices[deviceId] = {
        ...device.keys!,
        unsigned: device.displayName !== null ? { device_display_name: device.displayName } : {},
      };
    }
    out.device_keys[userId] = devices;
  }
  return out;
}

/**
 * Checks a POST /user/keys/claim answer to `requested`: only asked-for users and devices, at most
 * one key per device, of the algorithm asked for; a signed_curve25519 key must be an object with
 * a 32-byte key and, when the device's ed25519 key is known here (`known`, by [user, device]), a
 * valid signature by it. Anything else is dropped.
 */
export function checkClaimAnswer(
  requested: Record<string, Record<string, string>>,
  body: Record<string, unknown>,
  known: ReadonlyMap<string, string>,
): Record<string, Record<string, Record<string, JsonValue>>> {
  const out: Record<string, Record<string, Record<string, JsonValue>>> = {};
  const claimed = isJsonObject(body.one_time_keys as JsonValue) ? (body.one_time_keys as JsonObject) : {};
  for (const [userId, devices] of Object.entries(requested)) {
    const byDevice = Object.hasOwn(claimed, userId) ? claimed[userId] : undefined;
    if (!isJsonObject(byDevice)) continue;
    for (const [deviceId, algorithm] of Object.entries(devices)) {
      const keys = Object.hasOwn(byDevice, deviceId) ? byDevice[deviceId] : undefined;
      if (!isJsonObject(keys)) continue;
      for (const [name, key] of Object.entries(keys)) {
        const colon = name.indexOf(':');
        if (colon <= 0 || name.slice(0, colon) !== algorithm || colon === name.length - 1) continue;
        if (algorithm === 'signed_curve25519') {
          if (!isJsonObject(key) || typeof key.key !== 'string' || !isKey32(key.key)) continue;
          const ed25519 = known.get(JSON.stringify([userId, deviceId]));
          if (ed25519 !== undefined && !verifySignedBy(key, userId, `ed25519:${deviceId}`, ed25519)) continue;
        } else if (typeof key !== 'string' && !isJsonObject(key)) continue;
        out[userId] = { ...out[userId], [deviceId]: { [name]: key } };
        break;
      }
    }
  }
  return out;
}

interface DeviceListUpdate {
  userId: string;
  deviceId: string;
  streamId: number;
  prevIds: number[];
  deleted: boolean;
  keys: JsonValue | undefined;
  displayName: string | null;
}

function parseDeviceListUpdate(origin: string, content: JsonValue): DeviceListUpdate | undefined {
  if (!isJsonObject(content)) return undefined;
  const { user_id: userId, device_id: deviceId, stream_id: streamId, prev_id: prevId, deleted } = content;
  if (
    typeof userId !== 'string' ||
    typeof deviceId !== 'string' ||
    deviceId === '' ||
    deviceId.length > 255
  ) {
    return undefined;
  }
  const parsed = parseUserId(userId);
  if (!parsed || parsed.serverName !== origin) return undefined;
  if (typeof streamId !== 'number' || !Number.isSafeInteger(streamId) || streamId < 0) return undefined;
  if (
    prevId !== undefined &&
    (!Array.isArray(prevId) || !prevId.every((p) => typeof p === 'number' && Number.isSafeInteger(p)))
  ) {
    return undefined;
  }
  if (deleted !== undefined && typeof deleted !== 'boolean') return undefined;
  return {
    userId,
    deviceId,
    streamId,
    prevIds: (prevId as number[] | undefined) ?? [],
    deleted: deleted === true,
    keys: content.keys,
    displayName: displayNameOf(content.device_display_name),
  };
}

function sameContents(a: repo.RemoteDeviceList, b: repo.RemoteDeviceList): boolean {
  const norm = (l: repo.RemoteDeviceList) => ({
    devices: [...l.devices].sort((x, y) => (x.deviceId < y.deviceId ? -1 : 1)),
    crossSigning: [...l.crossSigning].sort((x, y) => (x.usage < y.usage ? -1 : 1)),
  });
  return sameJson(norm(a), norm(b));
}
