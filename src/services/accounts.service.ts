import type { Config } from '../config.ts';
import { errors } from '../errors.ts';
import { isValidLocalpart } from '../protocol/identifiers.ts';
import * as repo from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';
import type { UserRow } from '../storage/database.ts';
import * as refreshRepo from '../storage/refresh-tokens.repository.ts';
import type { AuditLog } from './audit-log.ts';
import type { Detection } from './detection/detection.service.ts';
import type { DeviceLists } from './device-lists.ts';
import type { RateLimits } from './rate-limits.ts';
import type { RegistrationTokensService } from './registration-tokens.service.ts';
import { hashPassword, hashToken, randomDeviceId, randomToken, verifyPassword } from './secrets.ts';
import type { SessionCache } from './session-cache.ts';
import { type StageChecker, type UiaFlow, type UiaKind, UiaRefusal, type UiaService } from './uia.service.ts';

export interface Session {
  userId: string;
  deviceId: string;
  /** SHA-256 of the access token in use: identifies it without keeping it. */
  tokenHash: string;
  isAdmin: boolean;
  /** Account states an admin sets (spec/admin.md); requireAuth enforces them. */
  locked?: boolean;
  suspended?: boolean;
  shadowBanned?: boolean;
  /** When the access token stops working (tokens given with a refresh token); none: never. */
  expiresTs?: number;
}

export interface LoginResult {
  user_id: string;
  device_id: string;
  access_token: string;
  /** Only when the client asked for one (`refresh_token: true`). */
  refresh_token?: string;
  expires_in_ms?: number;
}

export interface RefreshResult {
  access_token: string;
  refresh_token: string;
  expires_in_ms: number;
}

/** Devices removed in a transaction, and the stream position of the change. */
interface RemovedDevices {
  position: number;
  deviceIds: string[];
}

const MIN_PASSWORD_LENGTH = 8;
export const LOOKUPS_PER_MINUTE = 30;
const MAX_PASSWORD_LENGTH = 512;

/**
 * Accounts, logins, access tokens and devices. One method per user-visible action; HTTP routes,
 * the admin command and tests all call these.
 */
export class AccountsService {
  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly uia: UiaService,
    private readonly registrationTokens: RegistrationTokensService,
    private readonly deviceLists: DeviceLists,
    /** Failed logins, registrations and unauthenticated look-ups are limited through it. */
    private readonly limits: RateLimits,
    private readonly audit: AuditLog,
    private readonly sessions?: SessionCache,
    private readonly now: () => number = Date.now,
  ) {}

  private detection: Detection | undefined;

  /** The detectors told of failed logins, logins and registrations (set once, at start). */
  setDetection(detection: Detection): void {
    this.detection = detection;
  }

  /** Tells the detectors without holding up the request; their failures are not the client's. */
  private observe(run: (d: Detection) => Promise<void>): void {
    if (this.detection) run(this.detection).catch(() => {});
  }

  userIdFor(localpart: string): string {
    return `@${localpart}:${this.config.serverName}`;
  }

  /** Normalises a requested username to a localpart, refusing what the grammar does not allow. */
  normaliseUsername(username: string): string {
    const localpart = username.toLowerCase();
    if (!isValidLocalpart(localpart)) {
      throw errors.invalidUsername('Usernames may contain only a-z, 0-9, and . _ = - / +');
    }
    if (Buffer.byteLength(this.userIdFor(localpart), 'utf8') > 255) {
      throw errors.invalidUsername('The user ID would be longer than 255 bytes');
    }
    return localpart;
  }

  /** Counts one unauthenticated look-up by an address; 429 past LOOKUPS_PER_MINUTE. */
  limitLookup(address: string): Promise<void> {
    return this.limits.limitLookup(address);
  }

  async isUsernameAvailable(username: string): Promise<boolean> {
    const localpart = this.normaliseUsername(username);
    return !(await repo.userExists(this.db, this.userIdFor(localpart)));
  }

  checkPasswordStrength(password: string): void {
    if (password.length < MIN_PASSWORD_LENGTH) {
      throw errors.weakPassword(`Passwords must have at least ${MIN_PASSWORD_LENGTH} characters`);
    }
    if (password.length > MAX_PASSWORD_LENGTH) {
      throw errors.weakPassword(`Passwords must have at most ${MAX_PASSWORD_LENGTH} characters`);
    }
  }

  /** The flows offered for registration in the configured mode. */
  registrationFlows(): UiaFlow[] {
    switch (this.config.registration) {
      case 'open':
        return [{ stages: ['m.login.dummy'] }];
      case 'token':
        return [{ stages: ['m.login.registration_token'] }];
      case 'closed':
        return [];
    }
  }

  /**
   * POST /register: runs UIA for the configured mode, then creates the account and, unless
   * inhibited, logs in a device.
   */
  async registerWithUia(req: {
    username?: string;
    password?: string;
    deviceId?: string;
    initialDeviceDisplayName?: string;
    inhibitLogin?: boolean;
    /** The client handles refresh tokens: its access token expires (spec/account.md). */
    refreshToken?: boolean;
    auth?: unknown;
    address: string;
  }): Promise<Partial<LoginResult> & { user_id: string }> {
    if (this.config.registration === 'closed')
      throw errors.forbidden('Registration is disabled on this server');
    await this.limits.checkRegistration(req.address);
    // Check what can be checked before the client goes through UIA, so it learns early.
    const localpart = req.username !== undefined ? this.normaliseUsername(req.username) : undefined;
    if (localpart !== undefined && (await repo.userExists(this.db, this.userIdFor(localpart))))
      throw errors.userInUse();
    // A first request may carry no password: it only asks which flows are offered.
    if (req.password !== undefined) this.checkPasswordStrength(req.password);

    const checkers: Record<string, StageChecker> = {
      'm.login.dummy': async () => {},
      'm.login.registration_token': async (auth, session) => {
        if (typeof auth.token !== 'string') throw errors.missingParam('auth.token is required');
        if (!(await this.registrationTokens.isValid(auth.token))) {
          throw errors.forbidden('Invalid registration token');
        }
        session.data.registrationToken = auth.token;
      },
    };
    const uiaRequest = {
      kind: 'register' as const,
      userId: null,
      auth: req.auth,
      flows: this.registrationFlows(),
      checkers,
    };
    const result = await this.uia.run(uiaRequest, async (session) => {
      if (req.password === undefined) throw errors.missingParam('password is required');
      const token = session.data.registrationToken;
      return this.createAccount({
        localpart: localpart ?? (await this.generateLocalpart()),
        password: req.password,
        deviceId: req.deviceId,
        deviceDisplayName: req.initialDeviceDisplayName,
        login: !req.inhibitLogin,
        refreshToken: req.refreshToken,
        registrationToken: this.config.registration === 'token' ? String(token) : undefined,
      });
    });
    await this.limits.recordRegistration(req.address);
    this.observe((d) => d.registered(req.address));
    return result;
  }

  private async generateLocalpart(): Promise<string> {
    for (;;) {
      const candidate = `user${Math.floor(Math.random() * 1e10)}`;
      if (!(await repo.userExists(this.db, this.userIdFor(candidate)))) return candidate;
    }
  }

  /**
   * Creates an account (and optionally a logged-in device). Used by registration and by the admin
   * command. With a registration token, spends one use of it in the same transaction.
   */
  async createAccount(opts: {
    localpart: string;
    password?: string;
    admin?: boolean;
    deviceId?: string;
    deviceDisplayName?: string;
    login: boolean;
    refreshToken?: boolean;
    registrationToken?: string;
  }): Promise<Partial<LoginResult> & { user_id: string }> {
    const localpart = this.normaliseUsername(opts.localpart);
    const userId = this.userIdFor(localpart);
    if (opts.password !== undefined) this.checkPasswordStrength(opts.password);
    const passwordHash =
      opts.password !== undefined ? await hashPassword(opts.password, this.config.passwordHashCost) : null;
    const now = this.now();
    const created = await this.db.transaction().execute(async (trx) => {
      if (
        opts.registrationToken !== undefined &&
        !(await this.registrationTokens.spend(trx, opts.registrationToken))
      ) {
        throw errors.forbidden('Invalid registration token');
      }
      const inserted = await repo.insertUser(trx, {
        user_id: userId,
        localpart,
        password_hash: passwordHash,
        display_name: localpart,
        avatar_url: null,
        is_admin: opts.admin ?? false,
        created_ts: now,
      });
      if (!inserted) throw errors.userInUse();
      if (!opts.login) return { result: { user_id: userId }, newDevice: undefined };
      const started = await this.startSession(
        trx,
        userId,
        opts.deviceId,
        opts.deviceDisplayName,
        opts.refreshToken,
      );
      return { result: started.login, newDevice: started.newDevice };
    });
    await this.announceNewDevice(userId, created.newDevice);
    return created.result;
  }

  /** After commit: a device created by a login is a change of the user's device list. */
  private async announceNewDevice(
    userId: string,
    newDevice: { deviceId: string; position: number } | undefined,
  ): Promise<void> {
    if (newDevice) await this.deviceLists.announceDevices(userId, newDevice.position, [newDevice.deviceId]);
  }

  private async startSession(
    db: repo.Executor,
    userId: string,
    requestedDeviceId: string | undefined,
    displayName: string | undefined,
    refreshable = false,
  ): Promise<{ login: LoginResult; newDevice: { deviceId: string; position: number } | undefined }> {
    const deviceId = requestedDeviceId ?? randomDeviceId();
    const now = this.now();
    const known =
      requestedDeviceId !== undefined && (await repo.findDevice(db, userId, deviceId)) !== undefined;
    if (!known) await this.audit.record({ action: 'device.new', actor: userId, target: deviceId }, db);
    // A new device is a change of the user's device list (other servers are told of it too).
    const newDevice = known
      ? undefined
      : { deviceId, position: await this.deviceLists.recordChange(db, userId) };
    await repo.upsertDevice(db, {
      user_id: userId,
      device_id: deviceId,
      display_name: displayName ?? null,
      last_seen_ts: null,
      last_seen_ip: null,
      created_ts: now,
    });
    // Logging in again as an existing device ends that device's earlier sessions.
    await repo.deleteDeviceTokens(db, userId, deviceId);
    if (refreshable) {
      const login = {
        user_id: userId,
        device_id: deviceId,
        ...(await this.issueRefreshable(db, userId, deviceId, null)),
      };
      return { login, newDevice };
    }
    const accessToken = await this.newAccessToken(db, userId, deviceId, null);
    return { login: { user_id: userId, device_id: deviceId, access_token: accessToken }, newDevice };
  }

  /** Makes and stores (by hash) an access token; with a refresh token's hash, one that expires. */
  private async newAccessToken(
    db: repo.Executor,
    userId: string,
    deviceId: string,
    refreshHash: string | null,
  ): Promise<string> {
    const now = this.now();
    const accessToken = randomToken('cv_');
    await repo.insertAccessToken(db, {
      token_hash: hashToken(accessToken),
      user_id: userId,
      device_id: deviceId,
      created_ts: now,
      expires_ts: refreshHash !== null ? now + this.config.accessTokenLifetimeMs : null,
      refresh_token_hash: refreshHash,
    });
    return accessToken;
  }

  /**
   * A new refresh token and an access token that expires, for a device; `previousHash` is the
   * refresh token they replace (it stays usable until either new one is first used).
   */
  private async issueRefreshable(
    db: repo.Executor,
    userId: string,
    deviceId: string,
    previousHash: string | null,
  ): Promise<RefreshResult> {
    const now = this.now();
    const lifetime = this.config.accessTokenLifetimeMs;
    const refreshToken = randomToken('cvr_');
    const refreshHash = hashToken(refreshToken);
    await refreshRepo.insertRefreshToken(db, {
      token_hash: refreshHash,
      user_id: userId,
      device_id: deviceId,
      previous_hash: previousHash,
      created_ts: now,
      expires_ts: this.config.refreshTokenLifetimeMs > 0 ? now + this.config.refreshTokenLifetimeMs : null,
    });
    const accessToken = await this.newAccessToken(db, userId, deviceId, refreshHash);
    return { access_token: accessToken, refresh_token: refreshToken, expires_in_ms: lifetime };
  }

  /**
   * POST /refresh: new tokens for the refresh token's device. Using a refresh token retires the
   * one it replaced; repeating a refresh (the client lost the answer) replaces what the earlier
   * one gave, unused. An unknown or retired refresh token: 401 M_UNKNOWN_TOKEN.
   */
  async refresh(refreshToken: string): Promise<RefreshResult> {
    const hash = hashToken(refreshToken);
    const { userId, result } = await this.db.transaction().execute(async (trx) => {
      const row = await refreshRepo.findRefreshToken(trx, hash);
      if (!row || row.deactivated) throw errors.unknownToken();
      if (row.locked) throw errors.userLocked();
      // Expired: the client may log in again as its device, keeping its data.
      if (row.expires_ts !== null && this.now() >= row.expires_ts) throw errors.unknownToken(true);
      await refreshRepo.deleteRefreshTokens(trx, await refreshRepo.successorsOf(trx, hash));
      if (row.previous_hash !== null) await refreshRepo.retirePrevious(trx, hash, row.previous_hash);
      const result = await this.issueRefreshable(trx, row.user_id, row.device_id, hash);
      return { userId: row.user_id, result };
    });
    // Access tokens went with the retired refresh tokens: no process may keep accepting them.
    await this.sessions?.revokeUser(userId);
    return result;
  }

  /** Resolves the user a login identifier names, on this server; undefined when it names none. */
  resolveUserIdentifier(identifier: unknown): string | undefined {
    if (!identifier || typeof identifier !== 'object') return undefined;
    const id = identifier as Record<string, unknown>;
    if (id.type !== 'm.id.user' || typeof id.user !== 'string') return undefined;
    const user = id.user;
    if (user.startsWith('@')) {
      const colon = user.indexOf(':');
      if (colon < 0 || user.slice(colon + 1) !== this.config.serverName) return undefined;
      return `@${user.slice(1, colon).toLowerCase()}:${this.config.serverName}`;
    }
    return this.userIdFor(user.toLowerCase());
  }

  /**
   * Checks a user's password, counting failures per account and per address. Throws 429 when
   * either is over its limit (before any check, so guessing cannot continue), 403 on a mismatch.
   */
  async checkPassword(userId: string | undefined, password: string, address: string): Promise<UserRow> {
    await this.limits.checkLoginFailures(userId, address);
    const user = userId ? await repo.findUser(this.db, userId) : undefined;
    const ok = user?.password_hash ? await verifyPassword(password, user.password_hash) : false;
    if (!ok || !user) {
      await this.limits.recordLoginFailure(userId, address);
      await this.audit.record({ action: 'login.failed', target: userId ?? null, address });
      this.observe((d) => d.loginFailed(userId, address));
      throw errors.forbidden('Invalid username or password');
    }
    if (user.deactivated) throw errors.userDeactivated();
    if (user.locked) throw errors.userLocked();
    await this.limits.clearLoginFailures(user.user_id);
    return user;
  }

  /** POST /login with m.login.password. */
  async loginWithPassword(req: {
    identifier: unknown;
    password: string;
    deviceId?: string;
    initialDeviceDisplayName?: string;
    refreshToken?: boolean;
    address: string;
  }): Promise<LoginResult> {
    const userId = this.resolveUserIdentifier(req.identifier);
    const user = await this.checkPassword(userId, req.password, req.address);
    const login = await this.db.transaction().execute(async (trx) => {
      const started = await this.startSession(
        trx,
        user.user_id,
        req.deviceId,
        req.initialDeviceDisplayName,
        req.refreshToken,
      );
      await this.audit.record(
        { action: 'login', actor: user.user_id, target: started.login.device_id, address: req.address },
        trx,
      );
      return started;
    });
    await this.announceNewDevice(user.user_id, login.newDevice);
    this.observe((d) => d.loggedIn(user.user_id, req.address));
    // Logging in as an existing device ended that device's earlier tokens.
    if (req.deviceId !== undefined) await this.sessions?.revokeUser(user.user_id);
    return login.login;
  }

  /**
   * Finds the session of an access token; throws M_UNKNOWN_TOKEN when there is none, with
   * soft_logout when it has expired (the client may refresh it or log in again as its device).
   */
  async authenticateToken(accessToken: string): Promise<Session> {
    const tokenHash = hashToken(accessToken);
    const cached = this.sessions?.get(tokenHash);
    if (cached) {
      if (cached.expiresTs !== undefined && this.now() >= cached.expiresTs) throw errors.unknownToken(true);
      return cached;
    }
    const row = await repo.findAccessToken(this.db, tokenHash);
    if (!row || row.deactivated) throw errors.unknownToken();
    if (row.expires_ts !== null && this.now() >= row.expires_ts) throw errors.unknownToken(true);
    if (row.refresh_token_hash !== null && row.refresh_previous_hash !== null) {
      // The first use of a refreshed access token retires the refresh token it replaced.
      const { refresh_token_hash: current, refresh_previous_hash: previous } = row;
      await this.db.transaction().execute((trx) => refreshRepo.retirePrevious(trx, current, previous));
      await this.sessions?.revokeUser(row.user_id);
    }
    const session: Session = {
      userId: row.user_id,
      deviceId: row.device_id,
      tokenHash,
      isAdmin: row.is_admin,
      locked: row.locked,
      suspended: row.suspended,
      shadowBanned: row.shadow_banned,
      ...(row.expires_ts !== null ? { expiresTs: row.expires_ts } : {}),
    };
    this.sessions?.set(session);
    return session;
  }

  /** POST /logout: ends this session and removes its device. */
  async logout(session: Session): Promise<void> {
    await this.removeDevices(session.userId, (ids) => ids.filter((id) => id === session.deviceId));
  }

  /** POST /logout/all: ends every session of the user and removes all their devices. */
  async logoutAll(session: Session): Promise<void> {
    await this.removeDevices(session.userId, (ids) => ids);
  }

  /**
   * Removes the devices `pick` chooses among the user's existing ones: their access tokens (by
   * cascade), their end-to-end encryption keys and waiting to-device messages, and records the
   * device list change, announced once committed.
   */
  private async removeDevices(userId: string, pick: (existing: string[]) => string[]): Promise<void> {
    const removed = await this.db.transaction().execute((trx) => this.removeDevicesIn(trx, userId, pick));
    // Their tokens are gone: no process may keep accepting them.
    await this.sessions?.revokeUser(userId);
    await this.announceRemoved(userId, removed);
  }

  /** removeDevices inside the caller's transaction; the caller announces what it returns. */
  private async removeDevicesIn(
    trx: repo.Executor,
    userId: string,
    pick: (existing: string[]) => string[],
  ): Promise<RemovedDevices | undefined> {
    const existing = (await repo.listDevices(trx, userId)).map((d) => d.device_id);
    const doomed = pick(existing);
    if (doomed.length === 0) return undefined;
    const position = await this.deviceLists.removeDevices(trx, userId, doomed);
    await repo.deleteDevices(trx, userId, doomed);
    return position === undefined ? undefined : { position, deviceIds: doomed };
  }

  /** After commit: the removal is a change of the user's device list, here and for other servers. */
  private async announceRemoved(userId: string, removed: RemovedDevices | undefined): Promise<void> {
    if (removed) await this.deviceLists.announceDevices(userId, removed.position, removed.deviceIds);
  }

  /**
   * Removes the named devices of a user (tokens, keys, to-device messages) inside the caller's
   * transaction; returns what to run once it has committed (forget cached sessions, announce the
   * device list change).
   */
  async removeDevicesWithin(
    trx: repo.Executor,
    userId: string,
    deviceIds: readonly string[],
  ): Promise<() => Promise<void>> {
    const wanted = new Set(deviceIds);
    const removed = await this.removeDevicesIn(trx, userId, (ids) => ids.filter((id) => wanted.has(id)));
    return async () => {
      await this.sessions?.revokeUser(userId);
      await this.announceRemoved(userId, removed);
    };
  }

  /** Records a change of the user's keys inside the caller's transaction; returns the announcement to run once committed. */
  async recordKeyChangeWithin(trx: repo.Executor, userId: string): Promise<() => Promise<void>> {
    const position = await this.deviceLists.recordChange(trx, userId);
    return () => this.deviceLists.announce(userId, position);
  }

  /**
   * Ends sessions of a user on behalf of an admin, without UIA: the devices named (all when
   * none are named), their tokens, keys and waiting to-device messages. Returns the removed IDs.
   */
  async endSessions(userId: string, deviceIds?: readonly string[]): Promise<string[]> {
    const wanted = deviceIds && new Set(deviceIds);
    let removed: string[] = [];
    await this.removeDevices(userId, (ids) => {
      removed = wanted ? ids.filter((id) => wanted.has(id)) : ids;
      return removed;
    });
    return removed;
  }

  /** Forgets cached sessions of the user on every process (after an admin changes the account). */
  async forgetSessions(userId: string): Promise<void> {
    await this.sessions?.revokeUser(userId);
  }

  /** Sets a password on behalf of an admin (no UIA, no strength bypass). */
  async hashNewPassword(password: string): Promise<string> {
    this.checkPasswordStrength(password);
    return hashPassword(password, this.config.passwordHashCost);
  }

  /** Runs a sensitive action behind UIA with the user's password (m.login.password). */
  async withPassword<T>(
    session: Session,
    kind: UiaKind,
    auth: unknown,
    address: string,
    action: () => Promise<T>,
  ): Promise<T> {
    const checker: StageChecker = async (dict) => {
      const claimed = dict.identifier !== undefined ? this.resolveUserIdentifier(dict.identifier) : undefined;
      const legacyUser =
        typeof dict.user === 'string'
          ? this.resolveUserIdentifier({ type: 'm.id.user', user: dict.user })
          : undefined;
      if ((claimed ?? legacyUser) !== session.userId)
        throw new UiaRefusal(403, 'M_FORBIDDEN', 'Identifier does not match the logged-in user');
      if (typeof dict.password !== 'string') throw errors.missingParam('password is required');
      await this.checkPassword(session.userId, dict.password, address);
    };
    return this.uia.run(
      {
        kind,
        userId: session.userId,
        auth,
        flows: [{ stages: ['m.login.password'] }],
        checkers: { 'm.login.password': checker },
      },
      action,
    );
  }

  /** POST /account/password: changes the password after UIA; by default logs out other devices. */
  async changePassword(
    session: Session,
    req: { newPassword: string; logoutDevices: boolean; auth: unknown; address: string },
  ): Promise<void> {
    this.checkPasswordStrength(req.newPassword);
    await this.withPassword(session, 'password', req.auth, req.address, async () => {
      const hash = await hashPassword(req.newPassword, this.config.passwordHashCost);
      const removed = await this.db.transaction().execute(async (trx) => {
        await repo.updateUser(trx, session.userId, { password_hash: hash });
        await this.audit.record(
          {
            action: 'password.change',
            actor: session.userId,
            target: session.userId,
            address: req.address,
            details: { logout_devices: req.logoutDevices },
          },
          trx,
        );
        if (!req.logoutDevices) return undefined;
        return this.removeDevicesIn(trx, session.userId, (ids) =>
          ids.filter((id) => id !== session.deviceId),
        );
      });
      if (req.logoutDevices) await this.sessions?.revokeUser(session.userId);
      await this.announceRemoved(session.userId, removed);
    });
  }

  /**
   * The storage side of POST /account/deactivate (the caller has done UIA): marks the account
   * deactivated (its tokens stop working at once, on every process) and removes its devices with
   * their keys and to-device messages, its cross-signing keys and signatures, its key backups,
   * its presence and its pushers; with `erase`, also its profile, account data, push rule
   * changes and stored notifications. Leaving rooms is the
   * caller's (DeactivationService).
   */
  async closeAccount(userId: string, opts: { erase: boolean; address: string }): Promise<void> {
    const removed = await this.db.transaction().execute(async (trx) => {
      await repo.updateUser(trx, userId, {
        deactivated: true,
        ...(opts.erase ? { display_name: null, avatar_url: null } : {}),
      });
      const removed = await this.removeDevicesIn(trx, userId, (ids) => ids);
      await trx.deleteFrom('e2e_cross_signing_keys').where('user_id', '=', userId).execute();
      await trx.deleteFrom('e2e_cross_signing_signatures').where('signer_user_id', '=', userId).execute();
      await trx.deleteFrom('room_key_backup_versions').where('user_id', '=', userId).execute();
      await trx.deleteFrom('presence').where('user_id', '=', userId).execute();
      // A closed account is pushed nothing more (spec/push.md).
      await trx.deleteFrom('pushers').where('user_id', '=', userId).execute();
      await trx.deleteFrom('push_queue').where('user_id', '=', userId).execute();
      if (opts.erase) {
        await trx.deleteFrom('push_notifications').where('user_id', '=', userId).execute();
        await trx.deleteFrom('push_rule_changes').where('user_id', '=', userId).execute();
      }
      if (opts.erase) await trx.deleteFrom('account_data').where('user_id', '=', userId).execute();
      await this.audit.record(
        {
          action: 'account.deactivate',
          actor: userId,
          target: userId,
          address: opts.address,
          details: { erase: opts.erase },
        },
        trx,
      );
      return removed;
    });
    await this.sessions?.revokeUser(userId);
    await this.announceRemoved(userId, removed);
  }

  async listDevices(session: Session) {
    return (await repo.listDevices(this.db, session.userId)).map(deviceJson);
  }

  async getDevice(session: Session, deviceId: string) {
    const row = await repo.findDevice(this.db, session.userId, deviceId);
    if (!row) throw errors.notFound('No such device');
    return deviceJson(row);
  }

  /**
   * PUT /devices/{deviceId}: renames one of the user's devices. The display name is public (other
   * servers and the users sharing a room see it), so a rename is a device list change.
   */
  async renameDevice(session: Session, deviceId: string, displayName: string | null): Promise<void> {
    const { userId } = session;
    const position = await this.db.transaction().execute(async (trx) => {
      const row = await repo.findDevice(trx, userId, deviceId);
      if (!row) throw errors.notFound('No such device');
      if (row.display_name === displayName) return undefined;
      await repo.setDeviceDisplayName(trx, userId, deviceId, displayName);
      return this.deviceLists.recordChange(trx, userId);
    });
    if (position !== undefined) await this.deviceLists.announceDevices(userId, position, [deviceId]);
  }

  /** DELETE /devices/{id} and POST /delete_devices: after UIA, removes the devices and their tokens. */
  async deleteDevices(session: Session, deviceIds: string[], auth: unknown, address: string): Promise<void> {
    const wanted = new Set(deviceIds);
    await this.withPassword(session, 'delete_devices', auth, address, () =>
      this.removeDevices(session.userId, (ids) => ids.filter((id) => wanted.has(id))),
    );
  }

  /** Records when and from where a device was last seen, at most once a minute per device. */
  async touch(session: Session, address: string): Promise<void> {
    const key = `${session.userId}|${session.deviceId}`;
    const now = this.now();
    const last = this.lastTouched.get(key);
    if (last !== undefined && now - last < 60_000) return;
    this.lastTouched.set(key, now);
    if (this.lastTouched.size > 50_000) this.lastTouched.clear();
    await repo.touchDevice(this.db, session.userId, session.deviceId, address, now);
  }

  private readonly lastTouched = new Map<string, number>();
}

function deviceJson(row: {
  device_id: string;
  display_name: string | null;
  last_seen_ts: number | null;
  last_seen_ip: string | null;
}) {
  return {
    device_id: row.device_id,
    display_name: row.display_name ?? undefined,
    last_seen_ts: row.last_seen_ts ?? undefined,
    last_seen_ip: row.last_seen_ip ?? undefined,
  };
}
