import { createHash } from 'node:crypto';
import type { JsonObject } from '../../protocol/json.ts';
import type { KeysService } from '../../services/keys.service.ts';
import type { RemoteToDevice } from '../../services/to-device.service.ts';
import type { Db } from '../../storage/connect.ts';
import { takeDeviceListStreamIds } from '../../storage/e2ee-edus.repository.ts';
import * as outbox from '../../storage/federation.repository.ts';
import type { Edu, FederationSender } from './federation-sender.ts';

/**
 * The end-to-end encryption EDUs of this server's users (server-server API: Device Management,
 * End-to-End Encryption, Send-to-device messaging), all persistent in the sender's queues: they
 * are sent until the destination acknowledges them, across outages and restarts.
 *
 * - m.device_list_update: one per changed device of a local user, to every server sharing a room
 *   with the user. Each takes the next `stream_id` of the user (consecutive, at least the stream
 *   position of the change) and names the one before as `prev_id`, whether or not that one was
 *   sent to this destination: a server that missed an update sees the gap and resyncs through
 *   GET /user/devices (whose `stream_id` is never below the latest update's).
 * - m.signing_key_update: a local user's new master and/or self-signing key (never the
 *   user-signing key), to the servers sharing a room with the user.
 * - m.direct_to_device: the messages of one /sendToDevice request for the users of one server,
 *   with a `message_id` made of the sending device, the request's transaction ID and the
 *   destination (unique per destination; the same on a retry, so the receiver can drop repeats).
 *
 * Users of other servers are never the subject of an update sent from here.
 */
export class OutboundE2eeEdus {
  constructor(
    private readonly db: Db,
    private readonly serverName: string,
    private readonly sender: FederationSender,
    private readonly keys: KeysService,
    private readonly now: () => number = Date.now,
  ) {}

  private isLocal(userId: string): boolean {
    return userId.slice(userId.indexOf(':') + 1) === this.serverName;
  }

  /** After commit: some of a local user's devices changed at stream position `position`. */
  async devicesChanged(userId: string, position: number, deviceIds: readonly string[]): Promise<void> {
    if (!this.isLocal(userId) || deviceIds.length === 0) return;
    // Read before the transaction (PGlite has one connection, which the transaction holds).
    const states = await this.keys.deviceStates(userId, deviceIds);
    const servers = await outbox.serversSharingARoomWith(this.db, userId, this.serverName);
    const ids = [...states.keys()];
    await this.db.transaction().execute(async (trx) => {
      // The stream IDs are taken even when no server is to be told: prev_id then shows the gap.
      const { first, previous } = await takeDeviceListStreamIds(
        trx,
        userId,
        ids.length,
        position,
        this.now(),
      );
      const edus: Edu[] = ids.map((deviceId, i) => {
        const state = states.get(deviceId)!;
        const prev = i === 0 ? previous : first + i - 1;
        const content: JsonObject = {
          user_id: userId,
          device_id: deviceId,
          stream_id: first + i,
          prev_id: prev !== undefined ? [prev] : [],
          ...(state.deleted
            ? { deleted: true }
            : {
                ...(state.displayName !== undefined ? { device_display_name: state.displayName } : {}),
                ...(state.keys ? { keys: state.keys } : {}),
              }),
        };
        return { edu_type: 'm.device_list_update', content };
      });
      for (const server of servers) await this.sender.queuePersistentIn(trx, server, edus);
    });
    for (const server of servers) this.sender.wake(server);
  }

  /** After commit: a local user's master and/or self-signing key changed (or gained signatures). */
  async signingKeysChanged(
    userId: string,
    keys: { master_key?: JsonObject; self_signing_key?: JsonObject },
  ): Promise<void> {
    if (!this.isLocal(userId) || (!keys.master_key && !keys.self_signing_key)) return;
    const servers = await outbox.serversSharingARoomWith(this.db, userId, this.serverName);
    await this.sender.queueEduFor(
      servers,
      { edu_type: 'm.signing_key_update', content: { user_id: userId, ...keys } },
      { persistent: true },
    );
  }

  /** The m.direct_to_device delivery of ToDeviceService (setRemoteDelivery). */
  readonly toDevice: RemoteToDevice = async (m) => {
    if (!this.isLocal(m.sender) || m.destination === this.serverName) return;
    const messageId = createHash('sha256')
      .update(JSON.stringify([m.sender, m.senderDevice, m.txnId, m.destination]))
      .digest('base64url')
      .slice(0, 32);
    await this.sender.queueEdu(
      m.destination,
      {
        edu_type: 'm.direct_to_device',
        content: { sender: m.sender, type: m.type, message_id: messageId, messages: m.messages },
      },
      { persistent: true },
    );
  };
}
