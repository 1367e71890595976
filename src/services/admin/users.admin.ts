import type { Config } from '../../config.ts';
import { errors } from '../../errors.ts';
import { isValidUserId } from '../../protocol/identifiers.ts';
import type { JsonObject } from '../../protocol/json.ts';
import * as accountsRepo from '../../storage/accounts.repository.ts';
import * as repo from '../../storage/admin.repository.ts';
import type { Db } from '../../storage/connect.ts';
import type { UserRow } from '../../storage/database.ts';
import type { AccountsService } from '../accounts.service.ts';
import type { AuditLog } from '../audit-log.ts';
import type { RoomsService } from '../rooms.service.ts';
import type { AdminActor } from './actor.ts';

/** The user as the admin API shows it (Synapse's shape; `creation_ts` in seconds, as Synapse stores it). */
export function adminUserJson(row: repo.UserListRow | UserRow, lastSeen: number | null = null) {
  return {
    name: row.user_id,
    user_type: row.user_type,
    is_guest: false,
    admin: row.is_admin,
    deactivated: row.deactivated,
    erased: row.erased,
    shadow_banned: row.shadow_banned,
    locked: row.locked,
    suspended: row.suspended,
    displayname: row.display_name,
    avatar_url: row.avatar_url,
    creation_ts: Math.floor(row.created_ts / 1000),
    last_seen_ts: 'last_seen_ts' in row ? row.last_seen_ts : lastSeen,
    approved: true,
    appservice_id: null,
    consent_server_notice_sent: null,
    consent_version: null,
    consent_ts: null,
    threepids: [],
    external_ids: [],
  };
}

/** What the compromised-account action did. */
export interface CompromisedResult {
  devices_deleted: string[];
  cross_signing_keys_removed: number;
  password_reset: boolean;
  locked: boolean;
}

/** Account data holding the user's private cross-signing keys (encrypted by secret storage). */
const CROSS_SIGNING_SECRETS = [
  'm.cross_signing.master',
  'm.cross_signing.self_signing',
  'm.cross_signing.user_signing',
];

/** The changes PUT /_synapse/admin/v2/users/{userId} may ask for; absent fields stay as they are. */
export interface UserChanges {
  password?: string;
  logoutDevices?: boolean;
  displayname?: string | null;
  avatarUrl?: string | null;
  admin?: boolean;
  deactivated?: boolean;
  locked?: boolean;
  userType?: string | null;
}

/**
 * What a server admin does to accounts. The HTTP admin API, the admin command and the detectors
 * call these; each change is audited in the transaction that makes it (spec/admin.md).
 */
export class AdminUsersService {
  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly accounts: AccountsService,
    private readonly rooms: RoomsService,
    private readonly audit: AuditLog,
    private readonly now: () => number = Date.now,
  ) {}

  /** A user ID of this server, or 400 (Synapse: "Can only look up local users"). */
  localUser(userId: string): string {
    if (!isValidUserId(userId)) throw errors.invalidParam('Not a valid user ID');
    if (!userId.endsWith(`:${this.config.serverName}`))
      throw errors.invalidParam('Only local users can be managed here');
    return userId;
  }

  async requireUser(userId: string): Promise<UserRow> {
    const row = await accountsRepo.findUser(this.db, this.localUser(userId));
    if (!row) throw errors.notFound('User not found');
    return row;
  }

  async list(
    filter: repo.UserFilter,
    page: { from: number; limit: number; orderBy: repo.UserOrder; dir: 'f' | 'b' },
  ) {
    const { rows, total } = await repo.listUsers(this.db, filter, page);
    const next = page.from + rows.length;
    return {
      users: rows.map((r) => adminUserJson(r)),
      total,
      ...(next < total ? { next_token: String(next) } : {}),
    };
  }

  async get(userId: string) {
    const row = await this.requireUser(userId);
    const devices = await accountsRepo.listDevices(this.db, row.user_id);
    const seen = devices.map((d) => d.last_seen_ts).filter((t): t is number => t !== null);
    return adminUserJson(row, seen.length > 0 ? Math.max(...seen) : null);
  }

  /** PUT /v2/users/{userId}: creates the account when it does not exist, else changes it. */
  async upsert(
    by: AdminActor,
    userId: string,
    changes: UserChanges,
  ): Promise<{ created: boolean; user: ReturnType<typeof adminUserJson> }> {
    this.localUser(userId);
    const existing = await accountsRepo.findUser(this.db, userId);
    if (!existing) {
      const localpart = userId.slice(1, userId.indexOf(':'));
      if (this.accounts.userIdFor(this.accounts.normaliseUsername(localpart)) !== userId)
        throw errors.invalidParam('User IDs are lower case');
      await this.accounts.createAccount({
        localpart,
        ...(changes.password !== undefined ? { password: changes.password } : {}),
        admin: changes.admin ?? false,
        login: false,
      });
      await this.db.transaction().execute(async (trx) => {
        const initial = {
          ...(changes.displayname !== undefined && changes.displayname !== null
            ? { display_name: changes.displayname }
            : {}),
          ...(changes.avatarUrl !== undefined ? { avatar_url: changes.avatarUrl } : {}),
          ...(changes.userType !== undefined ? { user_type: changes.userType } : {}),
          ...(changes.locked !== undefined ? { locked: changes.locked } : {}),
        };
        if (Object.keys(initial).length > 0) await accountsRepo.updateUser(trx, userId, initial);
        await this.record(by, 'admin.user.create', userId, { admin: changes.admin ?? false }, trx);
      });
      if (changes.deactivated === true) await this.deactivate(by, userId, false);
      return { created: true, user: await this.get(userId) };
    }
    if (changes.admin === false && by.actor === userId && existing.is_admin)
      throw errors.forbidden('You may not demote yourself');
    if (
      changes.deactivated === false &&
      existing.deactivated &&
      changes.password === undefined &&
      existing.password_hash === null
    )
      throw errors.badJson('Reactivating an account needs a password');
    const passwordHash =
      changes.password !== undefined ? await this.accounts.hashNewPassword(changes.password) : undefined;
    const fields: string[] = [];
    await this.db.transaction().execute(async (trx) => {
      const update: Parameters<typeof accountsRepo.updateUser>[2] = {};
      if (passwordHash !== undefined) update.password_hash = passwordHash;
      if (changes.displayname !== undefined) update.display_name = changes.displayname;
      if (changes.avatarUrl !== undefined) update.avatar_url = changes.avatarUrl;
      if (changes.admin !== undefined && changes.admin !== existing.is_admin) update.is_admin = changes.admin;
      if (changes.userType !== undefined) update.user_type = changes.userType;
      if (changes.deactivated === false && existing.deactivated) update.deactivated = false;
      // Field names only: never the values (a password).
      fields.push(...Object.keys(update).map((k) => (k === 'password_hash' ? 'password' : k)));
      if (Object.keys(update).length > 0) await accountsRepo.updateUser(trx, userId, update);
      if (fields.length > 0) await this.record(by, 'admin.user.modify', userId, { fields }, trx);
    });
    if (changes.locked !== undefined && changes.locked !== existing.locked)
      await this.lockUser(userId, changes.locked, by);
    if (changes.deactivated === true && !existing.deactivated) await this.deactivate(by, userId, false);
    if (passwordHash !== undefined && changes.logoutDevices !== false)
      await this.accounts.endSessions(userId);
    if (fields.includes('admin')) await this.accounts.forgetSessions(userId);
    return { created: false, user: await this.get(userId) };
  }

  /**
   * POST /v1/deactivate/{userId}: ends every session, leaves every room, removes the password;
   * with `erase`, also the display name and avatar, and marks the account erased.
   */
  async deactivate(by: AdminActor, userId: string, erase: boolean): Promise<void> {
    const user = await this.requireUser(userId);
    await this.db.transaction().execute(async (trx) => {
      await accountsRepo.updateUser(trx, user.user_id, {
        deactivated: true,
        password_hash: null,
        ...(erase ? { erased: true, display_name: null, avatar_url: null } : {}),
      });
      await this.record(by, 'admin.user.deactivate', user.user_id, { erase }, trx);
    });
    await this.accounts.endSessions(user.user_id);
    const left = await this.leaveAllRooms(user.user_id, 'Account deactivated');
    await this.record(by, 'admin.user.leave_rooms', user.user_id, { rooms: left.length });
  }

  /** Leaves (or rejects) every room the user is in; returns the rooms left. */
  async leaveAllRooms(userId: string, reason: string): Promise<string[]> {
    const left: string[] = [];
    for (const roomId of await repo.activeMembershipsOf(this.db, userId)) {
      try {
        await this.rooms.leave(systemSession(userId), roomId, reason);
        left.push(roomId);
      } catch {
        // A room this server cannot leave on its own (an invite over federation): left as it is.
      }
    }
    return left;
  }

  /** POST /v1/reset_password/{userId} */
  async resetPassword(
    by: AdminActor,
    userId: string,
    newPassword: string,
    logoutDevices: boolean,
  ): Promise<void> {
    const user = await this.requireUser(userId);
    const hash = await this.accounts.hashNewPassword(newPassword);
    await this.db.transaction().execute(async (trx) => {
      await accountsRepo.updateUser(trx, user.user_id, { password_hash: hash });
      await this.record(
        by,
        'admin.user.reset_password',
        user.user_id,
        { logout_devices: logoutDevices },
        trx,
      );
    });
    if (logoutDevices) await this.accounts.endSessions(user.user_id);
  }

  /**
   * POST /_conclave/admin/v1/users/{userId}/compromised (a Conclave extension, spec/admin.md):
   * for an account someone else got into. In one transaction: every device goes with its access
   * and refresh tokens, device keys, one-time and fallback keys and waiting to-device messages;
   * the user's cross-signing keys, the signatures made by or on them, and the private
   * cross-signing keys kept (encrypted) in account data are deleted, so the next login must set
   * up cross-signing anew and everyone who shares a room is told the identity changed; with
   * `newPassword` the password is replaced, with `lock` the account is locked. Audited as
   * `admin.user.compromised`. Key backups and secret storage keys stay (the user's history).
   */
  async markCompromised(
    by: AdminActor,
    userId: string,
    opts: { lock?: boolean; newPassword?: string } = {},
  ): Promise<CompromisedResult> {
    const user = await this.requireUser(userId);
    if (user.deactivated) throw errors.badState('The account is deactivated');
    const hash =
      opts.newPassword !== undefined ? await this.accounts.hashNewPassword(opts.newPassword) : null;
    let announce: () => Promise<void> = async () => {};
    const result = await this.db.transaction().execute(async (trx) => {
      const devices = (await accountsRepo.listDevices(trx, user.user_id)).map((d) => d.device_id);
      announce = await this.accounts.removeDevicesWithin(trx, user.user_id, devices);
      const keys = await trx
        .deleteFrom('e2e_cross_signing_keys')
        .where('user_id', '=', user.user_id)
        .executeTakeFirst();
      await trx
        .deleteFrom('e2e_cross_signing_signatures')
        .where((eb) =>
          eb.or([eb('signer_user_id', '=', user.user_id), eb('target_user_id', '=', user.user_id)]),
        )
        .execute();
      await trx
        .deleteFrom('account_data')
        .where('user_id', '=', user.user_id)
        .where('room_id', '=', '')
        .where('type', 'in', [...CROSS_SIGNING_SECRETS])
        .execute();
      const crossSigningKeysRemoved = Number(keys.numDeletedRows);
      // The identity changed even when no device was left to remove: watchers must look again.
      if (devices.length === 0 && crossSigningKeysRemoved > 0) {
        announce = await this.accounts.recordKeyChangeWithin(trx, user.user_id);
      }
      const changes = {
        ...(hash !== null ? { password_hash: hash } : {}),
        ...(opts.lock ? { locked: true } : {}),
      };
      if (Object.keys(changes).length > 0) await accountsRepo.updateUser(trx, user.user_id, changes);
      const result: CompromisedResult = {
        devices_deleted: devices,
        cross_signing_keys_removed: crossSigningKeysRemoved,
        password_reset: hash !== null,
        locked: opts.lock === true || user.locked,
      };
      await this.record(
        by,
        'admin.user.compromised',
        user.user_id,
        {
          devices: devices.length,
          cross_signing_keys_removed: crossSigningKeysRemoved,
          password_reset: hash !== null,
          lock: opts.lock === true,
        },
        trx,
      );
      return result;
    });
    await announce();
    return result;
  }

  /** PUT /v1/users/{userId}/admin */
  async setAdmin(by: AdminActor, userId: string, admin: boolean): Promise<void> {
    await this.upsert(by, (await this.requireUser(userId)).user_id, { admin });
  }

  /**
   * Locks or unlocks an account (MSC3939): while locked, every request with its tokens answers
   * 401 M_USER_LOCKED with soft_logout, and it cannot log in. Sessions are kept, so unlocking
   * gives them back. Called by the admin API, the admin command and the detectors.
   */
  async lockUser(userId: string, locked: boolean, by: AdminActor): Promise<void> {
    await this.setState(by, userId, 'locked', locked, locked ? 'admin.user.lock' : 'admin.user.unlock');
  }

  /**
   * Suspends or reinstates an account (MSC3823): while suspended it can read but not write
   * (403 M_USER_SUSPENDED, spec/admin.md lists the refused endpoints).
   */
  async suspendUser(userId: string, suspended: boolean, by: AdminActor): Promise<void> {
    await this.setState(
      by,
      userId,
      'suspended',
      suspended,
      suspended ? 'admin.user.suspend' : 'admin.user.unsuspend',
    );
  }

  /** Shadow-bans (or lifts it): the user's sends and invites succeed for them and reach no one. */
  async shadowBan(by: AdminActor, userId: string, banned: boolean): Promise<void> {
    await this.setState(
      by,
      userId,
      'shadow_banned',
      banned,
      banned ? 'admin.user.shadow_ban' : 'admin.user.unshadow_ban',
    );
  }

  /** Sets one account state, audited, and drops the user's cached sessions on every process. */
  private async setState(
    by: AdminActor,
    userId: string,
    field: 'locked' | 'suspended' | 'shadow_banned',
    value: boolean,
    action: string,
  ): Promise<void> {
    const user = await this.requireUser(userId);
    await this.db.transaction().execute(async (trx) => {
      await accountsRepo.updateUser(trx, user.user_id, { [field]: value });
      await this.record(by, action, user.user_id, {}, trx);
    });
    await this.accounts.forgetSessions(user.user_id);
  }

  /** GET /v1/whois/{userId}: each device with where and when it was last seen. */
  async whois(userId: string) {
    const user = await this.requireUser(userId);
    const devices: Record<string, { sessions: Array<{ connections: JsonObject[] }> }> = {};
    for (const d of await accountsRepo.listDevices(this.db, user.user_id)) {
      devices[d.device_id] = {
        sessions: [
          {
            connections:
              d.last_seen_ip !== null
                ? [{ ip: d.last_seen_ip, last_seen: d.last_seen_ts ?? 0, user_agent: '' }]
                : [],
          },
        ],
      };
    }
    return { user_id: user.user_id, devices };
  }

  async joinedRooms(userId: string) {
    const user = await this.requireUser(userId);
    const joined = await repo.joinedRoomsOf(this.db, user.user_id);
    return { joined_rooms: joined, total: joined.length };
  }

  async devices(userId: string) {
    const user = await this.requireUser(userId);
    const devices = (await accountsRepo.listDevices(this.db, user.user_id)).map((d) => ({
      device_id: d.device_id,
      display_name: d.display_name,
      last_seen_ip: d.last_seen_ip,
      last_seen_ts: d.last_seen_ts,
      last_seen_user_agent: null,
      user_id: d.user_id,
    }));
    return { devices, total: devices.length };
  }

  async device(userId: string, deviceId: string) {
    const { devices } = await this.devices(userId);
    const device = devices.find((d) => d.device_id === deviceId);
    if (!device) throw errors.notFound('No such device');
    return device;
  }

  /** DELETE /v2/users/{userId}/devices/{deviceId} and POST .../delete_devices: no UIA for an admin. */
  async deleteDevices(by: AdminActor, userId: string, deviceIds: readonly string[]): Promise<string[]> {
    const user = await this.requireUser(userId);
    const removed = await this.accounts.endSessions(user.user_id, deviceIds);
    if (removed.length > 0) await this.record(by, 'admin.device.delete', user.user_id, { devices: removed });
    return removed;
  }

  private record(
    by: AdminActor,
    action: string,
    target: string,
    details: JsonObject,
    trx?: accountsRepo.Executor,
  ) {
    return this.audit.record({ action, actor: by.actor, target, address: by.address ?? null, details }, trx);
  }
}

/** A session to act as a local user inside the server (no token). */
export function systemSession(userId: string) {
  return { userId, deviceId: '', tokenHash: '', isAdmin: false };
}
