import { errors, MatrixError } from '../errors.ts';
import type { EventsService } from '../events/events.service.ts';
import { stateTuple } from '../protocol/event.ts';
import { isValidUserId } from '../protocol/identifiers.ts';
import { isJsonObject, type JsonObject } from '../protocol/json.ts';
import { requiredLevelForEvent, userPowerLevel } from '../protocol/power-levels.ts';
import { getRoomVersion } from '../protocol/room-versions.ts';
import type { Db } from '../storage/connect.ts';
import type { Session } from './accounts.service.ts';
import type { RoomReader } from './room-reads.ts';
import type { RoomsService } from './rooms.service.ts';

/** State carried from the old room to its replacement (as initial_state). */
const CARRIED_STATE = [
  'm.room.server_acl',
  'm.room.encryption',
  'm.room.name',
  'm.room.avatar',
  'm.room.topic',
  'm.room.guest_access',
  'm.room.history_visibility',
  'm.room.join_rules',
  'm.room.retention',
] as const;
/** Members of the old room invited to a replacement they could not join by themselves. */
const MAX_INVITED = 500;

/**
 * Room upgrades (client-server API: Room Upgrades, POST /rooms/{roomId}/upgrade): a new room
 * of the asked version, created by the upgrading user with the old room as `predecessor`, the
 * old room's state carried over (power levels, join rules, name, topic, avatar, encryption,
 * ACLs, history visibility, guest access, retention), its local aliases moved; then the old
 * room gets an `m.room.tombstone` naming the new one, and its power levels are raised so that
 * ordinary members can no longer talk or invite there. When the new room is not public, the
 * old room's joined members are invited to it.
 */
export class RoomUpgradesService {
  constructor(
    private readonly db: Db,
    private readonly rooms: RoomsService,
    private readonly events: EventsService,
    private readonly reader: RoomReader,
  ) {}

  async upgrade(
    session: Session,
    roomId: string,
    newVersion: string,
    additionalCreators: readonly string[] = [],
  ): Promise<{ replacement_room: string }> {
    const newRv = getRoomVersion(newVersion);
    if (!newRv)
      throw new MatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', `Room version ${newVersion} is not supported`);
    for (const u of additionalCreators)
      if (!isValidUserId(u)) throw errors.invalidParam(`Not a valid user ID: ${u}`);
    if ((await this.rooms.membership(roomId, session.userId)) !== 'join')
      throw errors.forbidden('You are not in this room');
    const oldVersion = await this.reader.roomVersionOf(this.db, roomId);
    const oldRv = oldVersion !== undefined ? getRoomVersion(oldVersion) : undefined;
    if (!oldRv) throw errors.notFound('Unknown room');

    const state = await this.reader.stateIdsAt(this.db, await this.rooms.currentGroup(roomId));
    const rows = await this.reader.eventRows(this.db, [...state.values()]);
    const contentOf = (type: string, stateKey = '') => {
      const id = state.get(stateTuple(type, stateKey));
      const row = id !== undefined ? rows.get(id) : undefined;
      return row && isJsonObject(row.json.content)
        ? { sender: row.sender, content: row.json.content }
        : undefined;
    };
    const powerLevels = contentOf('m.room.power_levels');
    const create = contentOf('m.room.create');
    const mine = userPowerLevel(session.userId, powerLevels, create, oldRv);
    if (mine < requiredLevelForEvent('m.room.tombstone', true, powerLevels, oldRv))
      throw errors.forbidden('You may not upgrade this room: your power level is too low to replace it');

    // The new room: its creators (v12) have infinite power, so they leave `users`; before v12
    // the upgrading user keeps at least the level to manage the room.
    const creators = newRv.creatorsHaveInfinitePower ? [session.userId, ...additionalCreators] : [];
    const levels: JsonObject = { ...(powerLevels?.content ?? {}) };
    const users: JsonObject = { ...(isJsonObject(levels.users) ? levels.users : {}) };
    for (const c of creators) delete users[c];
    if (!newRv.creatorsHaveInfinitePower)
      users[session.userId] = Math.max(
        typeof users[session.userId] === 'number' ? (users[session.userId] as number) : 0,
        100,
      );
    levels.users = users;
    const initialState = CARRIED_STATE.flatMap((type) => {
      const c = contentOf(type);
      return c ? [{ type, state_key: '', content: c.content }] : [];
    });
    const creationContent: JsonObject = { predecessor: { room_id: roomId } };
    const roomType = create?.content.type;
    if (typeof roomType === 'string') creationContent.type = roomType;
    if (newRv.creatorsHaveInfinitePower && additionalCreators.length > 0)
      creationContent.additional_creators = [...additionalCreators];
    const joinRule = contentOf('m.room.join_rules')?.content.join_rule;
    const { room_id: newRoomId } = await this.rooms.createRoom(session, {
      room_version: newVersion,
      preset: joinRule === 'public' ? 'public_chat' : 'private_chat',
      initial_state: initialState,
      power_level_content_override: levels,
      creation_content: creationContent,
    });

    // Local aliases follow the room, and so does the canonical alias.
    await this.db
      .updateTable('room_aliases')
      .set({ room_id: newRoomId })
      .where('room_id', '=', roomId)
      .execute();
    const canonical = contentOf('m.room.canonical_alias');
    if (canonical)
      await this.sendQuietly(newRoomId, session.userId, 'm.room.canonical_alias', canonical.content);
    const published = await this.db
      .selectFrom('rooms')
      .select('published')
      .where('room_id', '=', roomId)
      .executeTakeFirst();
    if (published?.published) {
      await this.db.updateTable('rooms').set({ published: true }).where('room_id', '=', newRoomId).execute();
      await this.db.updateTable('rooms').set({ published: false }).where('room_id', '=', roomId).execute();
    }

    await this.events.send({
      roomId,
      type: 'm.room.tombstone',
      sender: session.userId,
      stateKey: '',
      content: { body: 'This room has been replaced', replacement_room: newRoomId },
    });
    // Ordinary members can no longer talk or invite in the old room (when we may change that).
    const usersDefault = typeof levels.users_default === 'number' ? levels.users_default : 0;
    const restricted = Math.max(50, usersDefault + 1);
    const oldLevels: JsonObject = { ...(powerLevels?.content ?? {}) };
    const eventsDefault = typeof oldLevels.events_default === 'number' ? oldLevels.events_default : 0;
    const invite = typeof oldLevels.invite === 'number' ? oldLevels.invite : 0;
    if (eventsDefault < restricted || invite < restricted) {
      oldLevels.events_default = Math.max(eventsDefault, restricted);
      oldLevels.invite = Math.max(invite, restricted);
      await this.sendQuietly(roomId, session.userId, 'm.room.power_levels', oldLevels);
    }

    if (joinRule !== 'public') {
      const joined = [...state.entries()]
        .filter(([k, id]) => k.startsWith('m.room.member\u0000') && rows.get(id)?.membership === 'join')
        .map(([k]) => k.slice('m.room.member\u0000'.length))
        .filter((u) => u !== session.userId && !creators.includes(u))
        .slice(0, MAX_INVITED);
      for (const user of joined) {
        await this.rooms.inviteFor(session.userId, newRoomId, user).catch(() => undefined); // one refused invite (a ban list, an unreachable server) stops no other
      }
    }
    return { replacement_room: newRoomId };
  }

  /** Sends a state event, leaving it out when the rules refuse it (the upgrade goes on). */
  private async sendQuietly(
    roomId: string,
    sender: string,
    type: string,
    content: JsonObject,
  ): Promise<void> {
    try {
      await this.events.send({ roomId, type, sender, stateKey: '', content });
    } catch (err) {
      if (!(err instanceof MatrixError) || err.status !== 403) throw err;
    }
  }
}
