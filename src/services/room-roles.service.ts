import { errors } from '../errors.ts';
import type { EventsService } from '../events/events.service.ts';
import { isValidUserId } from '../protocol/identifiers.ts';
import type { JsonObject } from '../protocol/json.ts';
import { namedLevel } from '../protocol/power-levels.ts';
import * as repo from '../storage/admin.repository.ts';
import type { Db } from '../storage/connect.ts';
import type { RoomExpiryRow } from '../storage/database.ts';
import type { Session } from './accounts.service.ts';
import { type RoomPower, roomPower, withUserLevel } from './admin/room-power.ts';
import type { AuditLog } from './audit-log.ts';
import type { RoomReader } from './room-reads.ts';
import type { RoomsService } from './rooms.service.ts';

/** Role presets over power levels (spec/admin.md). */
export const ROLE_PRESETS = { admin: 100, moderator: 50, member: 0 } as const;
export type RolePreset = keyof typeof ROLE_PRESETS;

/** Named permissions and the power-levels entry each one sets. */
export const PERMISSIONS = {
  invite: { key: 'invite' },
  kick: { key: 'kick' },
  ban: { key: 'ban' },
  redact: { key: 'redact' },
  change_name: { event: 'm.room.name' },
  change_topic: { event: 'm.room.topic' },
  change_avatar: { event: 'm.room.avatar' },
  change_encryption: { event: 'm.room.encryption' },
  change_retention: { event: 'm.room.retention' },
  send_state: { key: 'state_default' },
  change_roles: { event: 'm.room.power_levels' },
} as const;
export type Permission = keyof typeof PERMISSIONS;

/** The advisory lock key of the expiry job: one process applies expiries at a time. */
const EXPIRY_JOB_LOCK = 0x636f6e31; // "con1"
/** How long a process owns the expiries it claimed; a process that dies mid-way loses them after this. */
const CLAIM_LEASE_MS = 60_000;
const CLAIM_BATCH = 50;
/** An expiry that failed this many times is dropped (audited as failed). */
const MAX_ATTEMPTS = 5;

const MAX_LEVEL = Number.MAX_SAFE_INTEGER;

function permissionLevel(power: RoomPower, p: Permission): number {
  const spec = PERMISSIONS[p];
  const pl = power.powerLevels;
  if ('event' in spec) {
    const v = (pl.events as JsonObject | undefined)?.[spec.event];
    if (typeof v === 'number') return v;
    return typeof pl.state_default === 'number' ? pl.state_default : 50;
  }
  if (spec.key === 'state_default') return typeof pl.state_default === 'number' ? pl.state_default : 50;
  return namedLevel(spec.key, { content: pl });
}

/**
 * Finer permissions for room admins: roles (named levels) applied to users, named permissions,
 * and expiries on memberships and roles applied by a job that runs once across processes.
 * Every change is an m.room.power_levels or m.room.member event through the pipeline, so the
 * room's authorization rules have the last word; the checks here say clearly why a change is
 * refused before an event is built.
 */
export class RoomRolesService {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;

  constructor(
    private readonly db: Db,
    private readonly rooms: RoomsService,
    private readonly events: EventsService,
    private readonly reader: RoomReader,
    private readonly audit: AuditLog,
    private readonly now: () => number = Date.now,
  ) {}

  private async joinedPower(session: Session, roomId: string): Promise<RoomPower> {
    const power = await roomPower(this.db, this.rooms, roomId);
    if ((await this.rooms.membership(roomId, session.userId)) !== 'join')
      throw errors.forbidden('You are not joined to this room');
    return power;
  }

  /** GET /_conclave/client/v1/rooms/{roomId}/roles */
  async roles(session: Session, roomId: string) {
    const power = await this.joinedPower(session, roomId);
    const users: Record<string, { level: number | 'creator'; role: string }> = {};
    const listed = Object.keys((power.powerLevels.users as JsonObject | undefined) ?? {});
    const members = await repo.joinedMembers(this.db, roomId);
    for (const u of new Set([...listed, ...members])) {
      const level = power.levelOf(u);
      const role = Number.isFinite(level)
        ? (Object.entries(ROLE_PRESETS).find(([, l]) => l === level)?.[0] ?? 'custom')
        : 'creator';
      users[u] = { level: Number.isFinite(level) ? level : 'creator', role };
    }
    const permissions: Record<string, number> = {};
    for (const p of Object.keys(PERMISSIONS) as Permission[]) permissions[p] = permissionLevel(power, p);
    return { presets: ROLE_PRESETS, permissions, users, expiries: await this.expiryList(roomId) };
  }

  /**
   * PUT /_conclave/client/v1/rooms/{roomId}/roles/{userId}: gives the user a role (a preset or a
   * level), optionally until `expiresTs`, when it drops to `levelAfter` (their level before, by
   * default). Returns the new m.room.power_levels event. Nobody gives more than they have, nor
   * changes someone at or above their own level (but themselves).
   */
  async setRole(
    session: Session,
    roomId: string,
    userId: string,
    req: { role?: string; level?: number; expiresTs?: number; levelAfter?: number },
  ) {
    if (!isValidUserId(userId)) throw errors.invalidParam('Not a valid user ID');
    const level = this.levelOfRequest(req);
    const power = await this.joinedPower(session, roomId);
    const mine = power.levelOf(session.userId);
    const theirs = power.levelOf(userId);
    if (level > mine) throw errors.forbidden(`You cannot give a level above your own (${mine})`);
    if (userId !== session.userId && theirs >= mine)
      throw errors.forbidden('You cannot change the role of a user at or above your own level');
    if (!Number.isFinite(theirs)) throw errors.forbidden("A room creator's power cannot be changed");
    if (req.expiresTs !== undefined) this.checkExpiry(req.expiresTs);
    const levelAfter = req.levelAfter ?? theirs;
    if (req.levelAfter !== undefined && req.levelAfter > mine)
      throw errors.forbidden(`You cannot give a level above your own (${mine})`);
    const sent =
      theirs === level
        ? undefined
        : await this.events.send({
            roomId,
            type: 'm.room.power_levels',
            sender: session.userId,
            stateKey: '',
            content: withUserLevel(power, userId, level),
          });
    if (req.expiresTs !== undefined) {
      await repo.upsertExpiry(this.db, {
        room_id: roomId,
        user_id: userId,
        kind: 'role',
        expires_ts: req.expiresTs,
        set_by: session.userId,
        level_after: levelAfter,
        created_ts: this.now(),
      });
    }
    await this.audit.record({
      action: 'room.role.set',
      actor: session.userId,
      target: userId,
      details: {
        room_id: roomId,
        level,
        ...(req.role !== undefined ? { role: req.role } : {}),
        ...(req.expiresTs !== undefined ? { expires_ts: req.expiresTs, level_after: levelAfter } : {}),
        ...(sent ? { event_id: sent.event.event_id } : {}),
      },
    });
    return this.powerLevelsEvent(roomId);
  }

  /** PUT /_conclave/client/v1/rooms/{roomId}/permissions: sets the level each named permission needs. */
  async setPermissions(session: Session, roomId: string, wanted: Partial<Record<Permission, number>>) {
    const power = await this.joinedPower(session, roomId);
    const mine = power.levelOf(session.userId);
    const content: JsonObject = {
      ...power.powerLevels,
      events: { ...((power.powerLevels.events as JsonObject) ?? {}) },
    };
    for (const [name, level] of Object.entries(wanted) as Array<[Permission, number]>) {
      if (!(name in PERMISSIONS)) throw errors.badJson(`Unknown permission ${name}`);
      if (level > mine || permissionLevel(power, name) > mine)
        throw errors.forbidden(
          `You cannot set ${name} above your own level (${mine}) or change it from above`,
        );
      const spec = PERMISSIONS[name];
      if ('event' in spec) (content.events as JsonObject)[spec.event] = level;
      else content[spec.key] = level;
    }
    await this.events.send({
      roomId,
      type: 'm.room.power_levels',
      sender: session.userId,
      stateKey: '',
      content,
    });
    await this.audit.record({
      action: 'room.permissions.set',
      actor: session.userId,
      target: roomId,
      details: { permissions: wanted as JsonObject },
    });
    return this.powerLevelsEvent(roomId);
  }

  /**
   * PUT /_conclave/client/v1/rooms/{roomId}/expiries/{userId}: the member is removed at
   * `expiresTs` (kind membership). Needs the power to kick them now.
   */
  async setMembershipExpiry(session: Session, roomId: string, userId: string, expiresTs: number) {
    if (!isValidUserId(userId)) throw errors.invalidParam('Not a valid user ID');
    this.checkExpiry(expiresTs);
    const power = await this.joinedPower(session, roomId);
    this.requireKickPower(power, session.userId, userId);
    const m = await this.rooms.membership(roomId, userId);
    if (m !== 'join' && m !== 'invite') throw errors.forbidden('That user is not in the room');
    await repo.upsertExpiry(this.db, {
      room_id: roomId,
      user_id: userId,
      kind: 'membership',
      expires_ts: expiresTs,
      set_by: session.userId,
      level_after: null,
      created_ts: this.now(),
    });
    await this.audit.record({
      action: 'room.expiry.set',
      actor: session.userId,
      target: userId,
      details: { room_id: roomId, kind: 'membership', expires_ts: expiresTs },
    });
    return { expiries: await this.expiryList(roomId) };
  }

  /** DELETE /_conclave/client/v1/rooms/{roomId}/expiries/{userId}?kind= */
  async clearExpiry(session: Session, roomId: string, userId: string, kind: RoomExpiryRow['kind']) {
    if (!isValidUserId(userId)) throw errors.invalidParam('Not a valid user ID');
    const power = await this.joinedPower(session, roomId);
    this.requireKickPower(power, session.userId, userId);
    if (!(await repo.deleteExpiry(this.db, roomId, userId, kind))) throw errors.notFound('No such expiry');
    await this.audit.record({
      action: 'room.expiry.clear',
      actor: session.userId,
      target: userId,
      details: { room_id: roomId, kind },
    });
    return { expiries: await this.expiryList(roomId) };
  }

  async listExpiries(session: Session, roomId: string) {
    await this.joinedPower(session, roomId);
    return { expiries: await this.expiryList(roomId) };
  }

  private async expiryList(roomId: string) {
    return (await repo.expiriesOfRoom(this.db, roomId)).map((e) => ({
      user_id: e.user_id,
      kind: e.kind,
      expires_ts: e.expires_ts,
      set_by: e.set_by,
      ...(e.level_after !== null ? { level_after: e.level_after } : {}),
    }));
  }

  private requireKickPower(power: RoomPower, actor: string, target: string): void {
    const mine = power.levelOf(actor);
    if (
      mine < namedLevel('kick', { content: power.powerLevels }) ||
      (actor !== target && power.levelOf(target) >= mine)
    )
      throw errors.forbidden('You need the power to kick that user');
  }

  private levelOfRequest(req: { role?: string; level?: number }): number {
    if ((req.role === undefined) === (req.level === undefined))
      throw errors.badJson('Give exactly one of role or level');
    if (req.role !== undefined) {
      if (!(req.role in ROLE_PRESETS))
        throw errors.badJson(`Unknown role ${req.role}: one of ${Object.keys(ROLE_PRESETS).join(', ')}`);
      return ROLE_PRESETS[req.role as RolePreset];
    }
    const level = req.level!;
    if (!Number.isSafeInteger(level) || Math.abs(level) > MAX_LEVEL)
      throw errors.badJson('level must be an integer');
    return level;
  }

  private checkExpiry(ts: number): void {
    if (!Number.isSafeInteger(ts) || ts <= this.now())
      throw errors.badJson('expires_ts must be a time in the future (ms)');
  }

  private async powerLevelsEvent(roomId: string) {
    const row = await this.rooms.currentStateRow(roomId, 'm.room.power_levels', '');
    if (!row) throw errors.notFound('The room has no power levels');
    return this.reader.toClient(this.db, row, { now: this.now() });
  }

  // --- the expiry job ------------------------------------------------------------------------

  /** Runs the job every `intervalMs` until stop(). */
  start(intervalMs: number): void {
    this.timer = setInterval(() => {
      void this.runDue().catch(() => {});
    }, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running?.catch(() => {});
  }

  /**
   * Applies due expiries; returns how many were applied. Claims them under a transaction-scoped
   * advisory lock (pg_try_advisory_xact_lock), so two processes never claim the same ones; a claim
   * lapses after CLAIM_LEASE_MS, so expiries a dead process had claimed are retried, and they
   * live in the database, so they survive restarts.
   */
  runDue(): Promise<number> {
    if (this.running) return this.running;
    this.running = this.runOnce().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async runOnce(): Promise<number> {
    const now = this.now();
    const claimed = await this.db.transaction().execute(async (trx) => {
      if (!(await repo.tryJobLock(trx, EXPIRY_JOB_LOCK))) return [];
      return repo.claimDueExpiries(trx, now, CLAIM_LEASE_MS, CLAIM_BATCH);
    });
    let applied = 0;
    for (const row of claimed) {
      try {
        const eventId = await this.apply(row);
        await repo.deleteExpiry(this.db, row.room_id, row.user_id, row.kind);
        await this.audit.record({
          action: 'room.expiry.apply',
          actor: row.set_by,
          target: row.user_id,
          details: { room_id: row.room_id, kind: row.kind, ...(eventId ? { event_id: eventId } : {}) },
        });
        applied++;
      } catch (err) {
        const attempts = row.attempts + 1;
        if (attempts >= MAX_ATTEMPTS) await repo.deleteExpiry(this.db, row.room_id, row.user_id, row.kind);
        await this.audit.record({
          action: 'room.expiry.failed',
          actor: row.set_by,
          target: row.user_id,
          details: {
            room_id: row.room_id,
            kind: row.kind,
            attempts,
            dropped: attempts >= MAX_ATTEMPTS,
            errcode: (err as { errcode?: string }).errcode ?? 'M_UNKNOWN',
          },
        });
      }
    }
    return applied;
  }

  /** Removes the member or lowers the role, as the admin who set the expiry; the event ID, if one was sent. */
  private async apply(row: RoomExpiryRow): Promise<string | undefined> {
    if (row.kind === 'membership') {
      const m = await this.rooms.membership(row.room_id, row.user_id);
      if (m !== 'join' && m !== 'invite' && m !== 'knock') return undefined;
      const sent = await this.events.send({
        roomId: row.room_id,
        type: 'm.room.member',
        sender: row.set_by,
        stateKey: row.user_id,
        content: { membership: 'leave', reason: 'Membership expired' },
      });
      return sent.event.event_id;
    }
    const power = await roomPower(this.db, this.rooms, row.room_id);
    const after = row.level_after ?? 0;
    if (power.levelOf(row.user_id) <= after) return undefined;
    const sent = await this.events.send({
      roomId: row.room_id,
      type: 'm.room.power_levels',
      sender: row.set_by,
      stateKey: '',
      content: withUserLevel(power, row.user_id, after),
    });
    return sent.event.event_id;
  }
}
