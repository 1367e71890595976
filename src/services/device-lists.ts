import type { Executor } from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';
import * as repo from '../storage/keys.repository.ts';
import type { Notifier } from '../streams/notifier.ts';
import { nextPosition } from '../streams/positions.ts';

/**
 * The device list stream: who changed their device keys or cross-signing keys, and when. Shared by
 * the keys service (uploads) and the accounts service (deleted devices), so that both write the
 * change in their own transaction and announce it the same way after commit.
 */
/**
 * Told, after commit, that some of a local user's devices changed (created, renamed, keys
 * published or signed, deleted), with the stream position of the change: the outbound
 * m.device_list_update (src/federation/sender/e2ee-edus.ts).
 */
export type LocalDevicesChanged = (
  userId: string,
  position: number,
  deviceIds: readonly string[],
) => Promise<void>;

export class DeviceLists {
  private localDevicesChanged: LocalDevicesChanged | undefined;

  constructor(
    private readonly db: Db,
    private readonly notifier: Notifier,
  ) {}

  /** Where changes of local users' devices go for other servers (set once, at start). */
  setLocalDevicesChanged(listener: LocalDevicesChanged): void {
    this.localDevicesChanged = listener;
  }

  /**
   * In the caller's transaction: takes a stream position and records that `userId`'s device list
   * changed, for everyone sharing a room with them or, with `observerId`, for that user only.
   */
  async recordChange(trx: Executor, userId: string, observerId: string | null = null): Promise<number> {
    const position = await nextPosition(trx);
    await repo.insertDeviceListChange(trx, position, userId, observerId);
    return position;
  }

  /**
   * In the caller's transaction, before or after the devices rows go: deletes the devices' keys,
   * waiting to-device messages and signatures, and records the change. Returns its position.
   */
  async removeDevices(
    trx: Executor,
    userId: string,
    deviceIds: readonly string[],
  ): Promise<number | undefined> {
    if (deviceIds.length === 0) return undefined;
    await repo.deleteDeviceData(trx, userId, deviceIds);
    return this.recordChange(trx, userId);
  }

  /**
   * After commit: wakes the syncs that must see the change, the user's own and those of everyone
   * sharing a room with them (or only the observer's).
   */
  async announce(userId: string, position: number, observerId: string | null = null): Promise<void> {
    const userIds =
      observerId !== null
        ? [observerId]
        : [...new Set([userId, ...(await repo.usersSharingRoomNow(this.db, userId))])];
    await this.notifier.notify({ kind: 'device_list', position, userIds });
  }

  /**
   * After commit, for a user of this server only: announce, then tell other servers which of the
   * user's devices changed (m.device_list_update). A failure to queue the updates is not the
   * client's: the change is committed and the other servers resync on the next gap.
   */
  async announceDevices(userId: string, position: number, deviceIds: readonly string[]): Promise<void> {
    await this.announce(userId, position);
    if (deviceIds.length === 0 || !this.localDevicesChanged) return;
    await this.localDevicesChanged(userId, position, deviceIds).catch(() => {});
  }

  /**
   * What `/sync` and `/keys/changes` report between two stream positions (from, upTo]:
   * - changed: the user themself if their device list changed; users joined to a room the user is
   *   joined to (at upTo) whose device list changed; changes only the user may see (signatures
   *   they made); and users who began to share a room with the user (not sharing at `from`,
   *   sharing at `upTo`), since the user may have missed their changes meanwhile.
   * - left: users who shared a room with the user at `from` and share none at `upTo`.
   */
  async changesBetween(
    userId: string,
    from: number,
    upTo: number,
  ): Promise<{ changed: string[]; left: string[] }> {
    if (upTo <= from) return { changed: [], left: [] };
    const [changes, memberEvents] = await Promise.all([
      repo.deviceListChangesBetween(this.db, userId, from, upTo),
      repo.membershipEventsBetween(this.db, userId, from, upTo),
    ]);
    if (changes.length === 0 && memberEvents.length === 0) return { changed: [], left: [] };

    const changed = new Set<string>();
    const changedOthers = new Set<string>();
    for (const c of changes) {
      if (c.observer_id !== null || c.user_id === userId) changed.add(c.user_id);
      else changedOthers.add(c.user_id);
    }

    // Who may have begun or ceased to share a room with the user: members whose membership
    // changed in a room of the user's, and everyone in a room whose membership of the user's own
    // changed.
    const membershipCandidates = new Set<string>();
    const ownRooms = new Set<string>();
    for (const e of memberEvents) {
      if (e.state_key === null) continue;
      if (e.state_key === userId) ownRooms.add(e.room_id);
      else membershipCandidates.add(e.state_key);
    }
    for (const member of await repo.membersOfRooms(this.db, [...ownRooms])) membershipCandidates.add(member);
    membershipCandidates.delete(userId);

    const sharingNow = await repo.usersSharingRoomAt(this.db, userId, upTo, [
      ...new Set([...changedOthers, ...membershipCandidates]),
    ]);
    for (const u of changedOthers) if (sharingNow.has(u)) changed.add(u);

    const left: string[] = [];
    if (membershipCandidates.size > 0) {
      const sharingBefore = await repo.usersSharingRoomAt(this.db, userId, from, [...membershipCandidates]);
      for (const u of membershipCandidates) {
        if (sharingNow.has(u) && !sharingBefore.has(u)) changed.add(u);
        if (!sharingNow.has(u) && sharingBefore.has(u)) left.push(u);
      }
    }
    return { changed: [...changed].sort(), left: left.sort() };
  }
}
