import { randomBytes } from 'node:crypto';
import type { Config } from '../../config.ts';
import { errors } from '../../errors.ts';
import type { EventsService } from '../../events/events.service.ts';
import { isValidRoomAlias, isValidRoomId, isValidUserId } from '../../protocol/identifiers.ts';
import type { JsonObject } from '../../protocol/json.ts';
import * as repo from '../../storage/admin.repository.ts';
import type { Db } from '../../storage/connect.ts';
import type { AuditLog } from '../audit-log.ts';
import { MAX_PAGE, pageBounds, timelinePage } from '../history.service.ts';
import type { RetentionService } from '../retention/retention.service.ts';
import type { RoomReader } from '../room-reads.ts';
import type { RoomsService } from '../rooms.service.ts';
import type { AdminActor } from './actor.ts';
import { removeLocalMembers } from './evict.ts';
import { roomPower, withUserLevel } from './room-power.ts';
import { systemSession } from './users.admin.ts';

/** The room as the admin API lists it (Synapse's field names). */
function roomJson(r: repo.RoomListRow) {
  return {
    room_id: r.room_id,
    name: r.name,
    canonical_alias: r.canonical_alias,
    joined_members: r.joined_members,
    joined_local_members: r.joined_local_members,
    version: r.version,
    creator: r.creator,
    encryption: r.encryption,
    federatable: r.federatable,
    public: r.public,
    join_rules: r.join_rules,
    guest_access: r.guest_access,
    history_visibility: r.history_visibility,
    state_events: r.state_events,
    room_type: r.room_type,
  };
}

/** What a server admin reads and does in rooms: the admin API and the admin command call these. */
export class AdminRoomsService {
  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly rooms: RoomsService,
    private readonly events: EventsService,
    private readonly reader: RoomReader,
    private readonly audit: AuditLog,
    private readonly retention: RetentionService,
    private readonly now: () => number = Date.now,
  ) {}

  async list(opts: {
    searchTerm?: string;
    from: number;
    limit: number;
    orderBy: repo.RoomOrder;
    dir: 'f' | 'b';
  }) {
    const { rows, total } = await repo.listRooms(this.db, this.config.serverName, opts);
    const next = opts.from + rows.length;
    return {
      rooms: rows.map(roomJson),
      offset: opts.from,
      total_rooms: total,
      ...(next < total ? { next_batch: next } : {}),
      ...(opts.from > 0 ? { prev_batch: Math.max(0, opts.from - opts.limit) } : {}),
    };
  }

  /** A room ID (or a local alias) naming a room this server holds; 404 otherwise. */
  async resolve(roomIdOrAlias: string): Promise<string> {
    if (!isValidRoomId(roomIdOrAlias) && !isValidRoomAlias(roomIdOrAlias))
      throw errors.invalidParam('Not a valid room ID or alias');
    return this.rooms.resolveRoom(roomIdOrAlias);
  }

  async details(roomId: string) {
    const row = await repo.roomSummary(this.db, this.config.serverName, await this.resolve(roomId));
    if (!row) throw errors.notFound('Unknown room');
    const forgotten = false;
    return {
      ...roomJson(row),
      avatar: row.avatar,
      topic: row.topic,
      joined_local_devices: null,
      forgotten,
      blocked: row.blocked,
    };
  }

  async members(roomId: string) {
    const members = await repo.joinedMembers(this.db, await this.resolve(roomId));
    return { members, total: members.length };
  }

  async state(roomId: string) {
    const id = await this.resolve(roomId);
    const rows = await this.reader.stateEventsAt(this.db, await this.rooms.currentGroup(id));
    return { state: await this.reader.toClientMany(this.db, rows, { now: this.now() }) };
  }

  /** GET /v1/rooms/{roomId}/messages: the room's timeline, whatever its history visibility. */
  async messages(roomId: string, opts: { from?: string; to?: string; dir: 'f' | 'b'; limit?: number }) {
    const id = await this.resolve(roomId);
    const limit = Math.min(Math.max(opts.limit ?? 10, 1), MAX_PAGE);
    const { from, to } = await pageBounds(this.db, opts);
    const rows = await timelinePage(this.db, id, { cursor: from, dir: opts.dir, to, limit });
    const last = rows.at(-1);
    const end = last ? (opts.dir === 'b' ? last.stream_ordering - 1 : last.stream_ordering) : from;
    return {
      chunk: await this.reader.toClientMany(this.db, rows, { now: this.now() }),
      start: `s${from}`,
      ...(rows.length === limit ? { end: `s${end}` } : {}),
    };
  }

  async getBlock(roomId: string) {
    if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
    const row = await repo.isRoomBlocked(this.db, roomId);
    return row ? { block: true, user_id: row.blocked_by } : { block: false };
  }

  /** PUT /v1/rooms/{roomId}/block: a blocked room cannot be joined by, or invite, users of this server. */
  async block(by: AdminActor, roomId: string, block: boolean): Promise<{ block: boolean }> {
    // A room this server has never seen may be blocked too, before anyone joins it.
    if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
    await this.db.transaction().execute(async (trx) => {
      await repo.setRoomBlocked(trx, roomId, block, by.actor, this.now());
      await this.audit.record(
        {
          action: block ? 'admin.room.block' : 'admin.room.unblock',
          actor: by.actor,
          target: roomId,
          address: by.address ?? null,
        },
        trx,
      );
    });
    return { block };
  }

  /**
   * DELETE /v2/rooms/{roomId} (and v1), and the admin command's `delete-room` and `purge-room`:
   * every local member leaves (invites are rejected, knocks withdrawn), local aliases are removed
   * and the room is unpublished; with `purge` (the API's default) the retention service then
   * deletes every row of the room (`RetentionService.deleteRoom`, spec/retention.md), which also
   * writes the audit record. With `block`, nobody here can join or be invited to it again.
   */
  async deleteRoom(
    by: AdminActor,
    roomId: string,
    opts: { block: boolean; purge: boolean; message?: string },
  ) {
    const id = await this.resolve(roomId);
    const deleteId = randomBytes(12).toString('base64url');
    const message = opts.message ?? 'This room has been removed by an admin';
    if (opts.purge) {
      if ((await this.reader.roomVersionOf(this.db, id)) === undefined) {
        // Nothing here to purge: a room this server never saw may still be blocked.
        if (!opts.block) throw errors.notFound('Unknown room');
        await this.block(by, id, true);
        return { deleteId, kicked_users: [], failed_to_kick_users: [], local_aliases: [], new_room_id: null };
      }
      if (opts.block) await repo.setRoomBlocked(this.db, id, true, by.actor, this.now());
      const result = await this.retention.deleteRoom(id, {
        actor: by.actor,
        address: by.address ?? null,
        message,
        details: { delete_id: deleteId, block: opts.block },
      });
      return {
        deleteId,
        kicked_users: result.kicked,
        failed_to_kick_users: result.failed,
        local_aliases: result.aliases,
        new_room_id: null,
        purge: result,
      };
    }
    if (opts.block) await repo.setRoomBlocked(this.db, id, true, by.actor, this.now());
    const { kicked, failed } = await removeLocalMembers(this.db, this.rooms, id, message);
    const aliases = await this.db
      .selectFrom('room_aliases')
      .select('alias')
      .where('room_id', '=', id)
      .execute();
    await this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('room_aliases').where('room_id', '=', id).execute();
      await trx.updateTable('rooms').set({ published: false }).where('room_id', '=', id).execute();
      await this.audit.record(
        {
          action: 'admin.room.delete',
          actor: by.actor,
          target: id,
          address: by.address ?? null,
          details: {
            delete_id: deleteId,
            block: opts.block,
            purged: false,
            kicked: kicked.length,
            failed: failed.length,
          },
        },
        trx,
      );
    });
    return {
      deleteId,
      kicked_users: kicked,
      failed_to_kick_users: failed,
      local_aliases: aliases.map((a) => a.alias),
      new_room_id: null,
    };
  }

  /**
   * POST /v1/rooms/{roomId}/make_room_admin: gives `userId` (a local user) the highest level a
   * local member with the power to change power levels can give, acting as that member; joins
   * the user first (invited by that member when the room is not public). Audited.
   */
  async makeRoomAdmin(by: AdminActor, roomIdOrAlias: string, userId: string) {
    if (!isValidUserId(userId) || !this.rooms.isLocalUser(userId))
      throw errors.invalidParam('Only local users can be made room admins');
    const roomId = await this.resolve(roomIdOrAlias);
    const power = await roomPower(this.db, this.rooms, roomId);
    const plLevel = (() => {
      const events = power.powerLevels.events as JsonObject | undefined;
      const v = events?.['m.room.power_levels'];
      if (typeof v === 'number') return v;
      return typeof power.powerLevels.state_default === 'number' ? power.powerLevels.state_default : 50;
    })();
    const candidates = (await repo.joinedMembers(this.db, roomId))
      .filter((u) => this.rooms.isLocalUser(u))
      .map((u) => ({ userId: u, level: power.levelOf(u) }))
      .filter((c) => c.level >= plLevel)
      .sort((a, b) => b.level - a.level);
    const acting = candidates[0];
    if (!acting) throw errors.badJson('No local member of this room has the power to make a room admin');
    const membership = await this.rooms.membership(roomId, userId);
    if (membership !== 'join') {
      const summary = await repo.roomSummary(this.db, this.config.serverName, roomId);
      if (summary?.join_rules !== 'public' && membership !== 'invite') {
        await this.rooms.invite(systemSession(acting.userId), roomId, userId);
      }
      await this.rooms.join(systemSession(userId), roomId);
    }
    const level = Number.isFinite(acting.level) ? acting.level : 100;
    const fresh = await roomPower(this.db, this.rooms, roomId);
    let eventId: string | undefined;
    if (fresh.levelOf(userId) < level) {
      const sent = await this.events.send({
        roomId,
        type: 'm.room.power_levels',
        sender: acting.userId,
        stateKey: '',
        content: withUserLevel(fresh, userId, level),
      });
      eventId = sent.event.event_id;
    }
    await this.audit.record({
      action: 'admin.room.make_admin',
      actor: by.actor,
      target: roomId,
      address: by.address ?? null,
      details: {
        user_id: userId,
        acting_as: acting.userId,
        level,
        ...(eventId ? { event_id: eventId } : {}),
      },
    });
    return {};
  }
}
