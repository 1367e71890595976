import type { Config } from '../../config.ts';
import { errors } from '../../errors.ts';
import type { EventsService } from '../../events/events.service.ts';
import type { JsonObject } from '../../protocol/json.ts';
import * as accountsRepo from '../../storage/accounts.repository.ts';
import * as repo from '../../storage/admin.repository.ts';
import type { Db } from '../../storage/connect.ts';
import type { AuditLog } from '../audit-log.ts';
import type { RoomsService } from '../rooms.service.ts';
import type { AdminActor } from './actor.ts';
import { systemSession } from './users.admin.ts';

/** The localpart of the user that sends server notices (`@notices:<server_name>`). */
export const NOTICES_LOCALPART = 'notices';
const NOTICES_USER_TYPE = 'server_notices';

/**
 * Server notices: messages from the server to one user, in a room of their own with the
 * notices user (created on first use, the user invited; users cannot write there).
 */
export class ServerNoticesService {
  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly rooms: RoomsService,
    private readonly events: EventsService,
    private readonly audit: AuditLog,
    private readonly now: () => number = Date.now,
  ) {}

  get systemUserId(): string {
    return `@${NOTICES_LOCALPART}:${this.config.serverName}`;
  }

  /** POST /_synapse/admin/v1/send_server_notice */
  async send(
    by: AdminActor,
    userId: string,
    content: JsonObject,
    type = 'm.room.message',
    stateKey?: string,
  ): Promise<{ event_id: string }> {
    const user = await accountsRepo.findUser(this.db, userId);
    if (!user || !this.rooms.isLocalUser(userId)) throw errors.notFound('User not found');
    if (user.deactivated) throw errors.badJson('That account is deactivated');
    const roomId = await this.noticeRoom(userId);
    const sent = await this.events.send({
      roomId,
      type,
      sender: this.systemUserId,
      content,
      ...(stateKey !== undefined ? { stateKey } : {}),
    });
    await this.audit.record({
      action: 'admin.server_notice.send',
      actor: by.actor,
      target: userId,
      address: by.address ?? null,
      details: { room_id: roomId, event_id: sent.event.event_id },
    });
    return { event_id: sent.event.event_id };
  }

  private async ensureSystemUser(): Promise<void> {
    const existing = await accountsRepo.findUser(this.db, this.systemUserId);
    if (existing && existing.user_type !== NOTICES_USER_TYPE)
      throw errors.unknown('The server notices user ID belongs to an ordinary account');
    if (existing) return;
    await accountsRepo.insertUser(this.db, {
      user_id: this.systemUserId,
      localpart: NOTICES_LOCALPART,
      password_hash: null,
      display_name: 'Server Notices',
      avatar_url: null,
      created_ts: this.now(),
      user_type: NOTICES_USER_TYPE,
    });
  }

  /** The user's notices room, made (or the user invited back) as needed. */
  async noticeRoom(userId: string): Promise<string> {
    await this.ensureSystemUser();
    const system = systemSession(this.systemUserId);
    const known = await repo.noticeRoomOf(this.db, userId);
    if (known !== undefined && (await this.rooms.membership(known, this.systemUserId)) === 'join') {
      const m = await this.rooms.membership(known, userId);
      if (m !== 'join' && m !== 'invite' && m !== 'ban') await this.rooms.invite(system, known, userId);
      return known;
    }
    const { room_id } = await this.rooms.createRoom(system, {
      preset: 'private_chat',
      name: 'Server Notices',
      invite: [userId],
      // Users are below events_default: they read notices, they do not answer in this room.
      power_level_content_override: { users_default: -10 },
    });
    await repo.setNoticeRoom(this.db, userId, room_id);
    return room_id;
  }
}
