import type { Config } from '../config.ts';
import { errors } from '../errors.ts';
import { parseUserId } from '../protocol/identifiers.ts';
import type { JsonObject } from '../protocol/json.ts';
import type { Executor } from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';
import { forgetInboundToDeviceBefore, recordInboundToDevice } from '../storage/e2ee-edus.repository.ts';
import * as repo from '../storage/keys.repository.ts';
import type { Notifier } from '../streams/notifier.ts';
import { nextPosition } from '../streams/positions.ts';
import type { Session } from './accounts.service.ts';
import { BATCH_SIZE, inBatches, LIMITS } from './request-limits.ts';
import { ENCRYPTED_ONLY_TO_DEVICE_TYPES } from './secret-policy.ts';

/** How long a to-device transaction ID is remembered, and how often old ones are forgotten. */
export const TXN_KEPT_MS = 24 * 60 * 60 * 1000;
const TXN_CLEANUP_EVERY_MS = 60 * 60 * 1000;

/** The device ID that addresses every device of a user. */
export const ALL_DEVICES = '*';

/**
 * Send-to-device messaging (client-server API: Send-to-Device messaging). Messages wait in the
 * database for their device and are delivered by /sync, which deletes them once the device
 * acknowledges them with a later since token.
 */
/** Which of the named users' devices are cross-signed by their user (KeysService.crossSignedDevices). */
export type CrossSignedDevices = (userIds: readonly string[]) => Promise<Map<string, Set<string>>>;

/**
 * The to-device messages of one request for the users of one other server, as the content of an
 * m.direct_to_device EDU wants them: sender, type, messages by user and device (or `*`), and what
 * a message_id can be made of (the txnId is unique per sending device only, so with senderDevice).
 */
export type RemoteToDevice = (m: {
  sender: string;
  senderDevice: string;
  type: string;
  txnId: string;
  destination: string;
  messages: Record<string, Record<string, JsonObject>>;
}) => Promise<void>;

/** One message for one device. */
interface Target {
  userId: string;
  deviceId: string;
  content: JsonObject;
}

/** The to-device type that carries Olm-encrypted payloads: room keys, forwarded keys, secrets. */
const ENCRYPTED_TO_DEVICE = 'm.room.encrypted';

export class ToDeviceService {
  private crossSigned: CrossSignedDevices | undefined;
  /** Encrypted to-device messages dropped by the cross-signing policy, since start (for tests and metrics). */
  droppedUnverified = 0;

  /**
   * Turns on the policy of `to_device_encrypted_requires_cross_signing` (spec/e2ee.md):
   * m.room.encrypted to-device messages go only to devices cross-signed by their user.
   */
  requireCrossSigned(check: CrossSignedDevices, onDropped: (count: number) => void = () => {}): void {
    this.crossSigned = check;
    this.onDropped = onDropped;
  }

  private onDropped: (count: number) => void = () => {};

  /**
   * Where messages to users of other servers go: the one seam for the m.direct_to_device EDU
   * (server-server API: Send-to-device messaging), one call per destination server per request.
   * Until the EDU sender is plugged in with setRemoteDelivery, they are dropped (and counted);
   * a server with federation plugs it in at start (src/federation/sender/e2ee-edus.ts).
   */
  private remoteDelivery: RemoteToDevice = async (m) => {
    this.droppedRemote += Object.values(m.messages).reduce(
      (n, byDevice) => n + Object.keys(byDevice).length,
      0,
    );
  };
  /** Messages to devices of users of other servers dropped for want of a sender (since start). */
  droppedRemote = 0;

  setRemoteDelivery(deliver: RemoteToDevice): void {
    this.remoteDelivery = deliver;
  }

  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly notifier: Notifier,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * PUT /sendToDevice/{eventType}/{txnId}: stores one message per addressed device (all of a
   * user's devices for `*`), all at one stream position. A transaction ID the sending device
   * already used stores nothing new. Messages to users of other servers are handed, per server,
   * to the remote delivery seam (dropped until the m.direct_to_device sender is plugged in);
   * messages to unknown local users or devices are dropped.
   */
  async send(
    session: Session,
    type: string,
    txnId: string,
    messages: Record<string, Record<string, JsonObject>>,
  ): Promise<void> {
    if (ENCRYPTED_ONLY_TO_DEVICE_TYPES.has(type)) {
      throw errors.invalidParam(`${type} carries keys: send it Olm-encrypted, as m.room.encrypted`);
    }
    const users = Object.entries(messages);
    if (users.length > LIMITS.toDeviceUsers) {
      throw errors.tooLarge(`At most ${LIMITS.toDeviceUsers} users per to-device request`);
    }
    const local: Array<[string, Record<string, JsonObject>]> = [];
    const remote = new Map<string, Record<string, Record<string, JsonObject>>>();
    for (const [userId, byDevice] of users) {
      const parsed = parseUserId(userId);
      if (!parsed) throw errors.invalidParam('messages must be keyed by user IDs');
      if (parsed.serverName === this.config.serverName) local.push([userId, byDevice]);
      else remote.set(parsed.serverName, { ...remote.get(parsed.serverName), [userId]: byDevice });
    }
    // Read before the transaction (PGlite has one connection, which the transaction holds).
    const signed = await this.crossSignedFor(
      type,
      local.map(([userId]) => userId),
    );
    const written = await this.db.transaction().execute(async (trx) => {
      if (!(await repo.insertToDeviceTxn(trx, session.userId, session.deviceId, txnId, this.now()))) {
        return { fresh: false as const };
      }
      const targets = await this.addressed(trx, local, 'refuse');
      return { fresh: true as const, ...(await this.store(trx, session.userId, type, targets, signed)) };
    });
    if (written.fresh && written.position !== undefined) {
      await this.notifier.notify({ kind: 'to_device', position: written.position, userIds: written.userIds });
    }
    // A transaction ID used before sent everything the first time: only a new one goes out.
    if (written.fresh) {
      for (const [server, messagesOfServer] of remote) {
        await this.remoteDelivery({
          sender: session.userId,
          senderDevice: session.deviceId,
          type,
          txnId,
          destination: server,
          messages: messagesOfServer,
        });
      }
    }
    await this.forgetOldTxnIds();
  }

  /**
   * The devices the messages address among those of the (local) users named: the device named,
   * or every device of the user for `*` (a message naming the device wins). Past
   * LIMITS.toDeviceMessages, a 413 (`refuse`) or the rest dropped (`truncate`).
   */
  private async addressed(
    trx: Executor,
    local: ReadonlyArray<[string, Record<string, JsonObject>]>,
    overLimit: 'refuse' | 'truncate',
  ): Promise<Target[]> {
    const devicesOf = new Map<string, string[]>();
    await inBatches(
      local.map(([userId]) => userId),
      async (batch) => {
        for (const [userId, ids] of await repo.deviceIdsOfUsers(trx, batch)) devicesOf.set(userId, ids);
      },
      // One short query per batch of users; each user may have several devices.
      BATCH_SIZE * 4,
    );
    const targets: Target[] = [];
    for (const [userId, byDevice] of local) {
      const everyone = byDevice[ALL_DEVICES];
      for (const deviceId of devicesOf.get(userId) ?? []) {
        const content = byDevice[deviceId] ?? everyone;
        if (content === undefined) continue;
        if (targets.length >= LIMITS.toDeviceMessages) {
          if (overLimit === 'truncate') return targets;
          throw errors.tooLarge(
            `At most ${LIMITS.toDeviceMessages} to-device messages per request, counting each device \`*\` reaches`,
          );
        }
        targets.push({ userId, deviceId, content });
      }
    }
    return targets;
  }

  /**
   * In the caller's transaction: stores the messages the cross-signing policy lets through (all
   * when `signed` is undefined), at one new stream position.
   */
  private async store(
    trx: Executor,
    sender: string,
    type: string,
    targets: readonly Target[],
    signed: Map<string, Set<string>> | undefined,
  ): Promise<{ position?: number; userIds?: string[]; stored: number }> {
    const allowed = signed ? targets.filter((t) => signed.get(t.userId)?.has(t.deviceId) === true) : targets;
    if (allowed.length < targets.length) {
      this.droppedUnverified += targets.length - allowed.length;
      this.onDropped(targets.length - allowed.length);
    }
    if (allowed.length === 0) return { stored: 0 };
    const position = await nextPosition(trx);
    await inBatches(allowed, (batch) =>
      repo.insertToDeviceMessages(
        trx,
        batch.map((t) => ({ position, sender, type, ...t })),
      ),
    );
    return { position, userIds: [...new Set(allowed.map((t) => t.userId))], stored: allowed.length };
  }

  /**
   * An m.direct_to_device EDU from `origin` (its content checked by the inbound handler:
   * src/federation/inbound/e2ee-edus.ts): stored for the addressed devices of this server's
   * users (all of a user's devices for `*`) as a local message is, under the same cross-signing
   * policy, at most LIMITS.toDeviceMessages of them. Users of other servers, unknown users and
   * devices are passed over. A message_id of `origin` received before is ignored: a transaction
   * sent again delivers nothing twice. Returns how many messages were stored.
   */
  async receiveRemote(m: {
    origin: string;
    sender: string;
    type: string;
    messageId: string;
    messages: Record<string, Record<string, JsonObject>>;
  }): Promise<number> {
    if (ENCRYPTED_ONLY_TO_DEVICE_TYPES.has(m.type)) return 0;
    const local = Object.entries(m.messages)
      .filter(([userId]) => parseUserId(userId)?.serverName === this.config.serverName)
      .slice(0, LIMITS.toDeviceUsers);
    const signed = await this.crossSignedFor(
      m.type,
      local.map(([userId]) => userId),
    );
    const written = await this.db.transaction().execute(async (trx) => {
      if (!(await recordInboundToDevice(trx, m.origin, m.messageId, this.now()))) return { stored: 0 };
      // Another server's request is not refused for its size: what is past the limit is dropped.
      const targets = await this.addressed(trx, local, 'truncate');
      return this.store(trx, m.sender, m.type, targets, signed);
    });
    if (written.position !== undefined && written.userIds) {
      await this.notifier.notify({ kind: 'to_device', position: written.position, userIds: written.userIds });
    }
    await this.forgetOldTxnIds();
    return written.stored;
  }

  /**
   * Under the cross-signing policy and for an encrypted message: the devices of the recipients
   * their user has cross-signed. Messages to other devices are dropped, never stored, so a device
   * verified later gets only the keys sent after (spec/e2ee.md says why they are dropped, not
   * held). Undefined: no filtering.
   */
  private async crossSignedFor(
    type: string,
    userIds: string[],
  ): Promise<Map<string, Set<string>> | undefined> {
    if (!this.crossSigned || type !== ENCRYPTED_TO_DEVICE || userIds.length === 0) return undefined;
    return this.crossSigned(userIds);
  }

  private lastTxnCleanup = 0;

  /**
   * Transaction IDs guard against a client retrying a request it is unsure went through, which it
   * does within minutes: after a day they are forgotten (checked at most once an hour per process).
   */
  private async forgetOldTxnIds(): Promise<void> {
    const now = this.now();
    if (now - this.lastTxnCleanup < TXN_CLEANUP_EVERY_MS) return;
    this.lastTxnCleanup = now;
    await repo.deleteToDeviceTxnsBefore(this.db, now - TXN_KEPT_MS);
    await forgetInboundToDeviceBefore(this.db, now - TXN_KEPT_MS);
  }

  /** The to-device events for a device with position in (from, upTo], in position order. */
  messagesFor(userId: string, deviceId: string, from: number, upTo: number): Promise<JsonObject[]> {
    return repo.toDeviceMessagesBetween(this.db, userId, deviceId, from, upTo);
  }

  /** Deletes a device's to-device messages at or below `upTo`: the device has received them. */
  acknowledge(userId: string, deviceId: string, upTo: number): Promise<void> {
    return repo.deleteToDeviceMessagesUpTo(this.db, userId, deviceId, upTo);
  }
}
