import { errors } from '../../errors.ts';
import { isValidRoomId } from '../../protocol/identifiers.ts';
import type { JsonObject } from '../../protocol/json.ts';
import { userPowerLevel } from '../../protocol/power-levels.ts';
import { getRoomVersion, type RoomVersion } from '../../protocol/room-versions.ts';
import type { Executor } from '../../storage/accounts.repository.ts';
import * as rooms from '../../storage/rooms.repository.ts';
import type { RoomsService } from '../rooms.service.ts';

/** A room's current power levels, create event and version: what deciding who may do what needs. */
export interface RoomPower {
  roomId: string;
  rv: RoomVersion;
  /** The current m.room.power_levels content (an empty object when the room has none). */
  powerLevels: JsonObject;
  hasPowerLevels: boolean;
  create: { sender: string; content: JsonObject };
  levelOf(userId: string): number;
}

export async function roomPower(
  db: Executor,
  roomsService: RoomsService,
  roomId: string,
): Promise<RoomPower> {
  if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
  const room = await rooms.findRoom(db, roomId);
  const rv = room && getRoomVersion(room.room_version);
  const create = await roomsService.currentStateRow(roomId, 'm.room.create', '');
  if (!room || !rv || !create) throw errors.notFound('Unknown room');
  const pl = await roomsService.currentStateRow(roomId, 'm.room.power_levels', '');
  const powerLevels = (pl?.json.content as JsonObject | undefined) ?? {};
  const createEvent = { sender: create.sender, content: create.json.content as JsonObject };
  const plEvent = pl ? { content: powerLevels } : undefined;
  return {
    roomId,
    rv,
    powerLevels,
    hasPowerLevels: pl !== undefined,
    create: createEvent,
    levelOf: (userId) => userPowerLevel(userId, plEvent, createEvent, rv),
  };
}

/** The power levels content with one user's level set (removed when it equals users_default). */
export function withUserLevel(power: RoomPower, userId: string, level: number): JsonObject {
  const users = { ...((power.powerLevels.users as JsonObject | undefined) ?? {}) };
  const usersDefault =
    typeof power.powerLevels.users_default === 'number' ? power.powerLevels.users_default : 0;
  if (level === usersDefault) delete users[userId];
  else users[userId] = level;
  return { ...power.powerLevels, users };
}
