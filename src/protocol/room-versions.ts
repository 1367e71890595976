/**
 * The room versions Conclave serves and the rules that differ between them.
 * Spec: rooms/v10.md, rooms/v11.md, rooms/v12.md.
 */
export type RoomVersionId = '10' | '11' | '12';

export interface RoomVersion {
  id: RoomVersionId;
  /** v11+: redaction keeps all of m.room.create content, `invite` in power levels, `redacts` in content. */
  updatedRedactionRules: boolean;
  /** v11+: m.room.redaction carries `redacts` in content rather than at the top level. */
  redactsInContent: boolean;
  /** v12: the room ID is `!` + the create event's reference hash; the create event has no room_id. */
  roomIdFromCreateEvent: boolean;
  /** v12: the create event's sender and `additional_creators` have infinite power. */
  creatorsHaveInfinitePower: boolean;
  /** v12: the create event is not listed in auth_events (the room ID implies it). */
  createEventInAuthEvents: boolean;
  /** State resolution algorithm: v1 for room version 1, v2 for 2 to 11, v2.1 for 12. */
  stateResolution: 'v1' | 'v2' | 'v2.1';
  /**
   * v11+: the room creator is the create event's `sender`; in v10 it is `content.creator`, which
   * auth rule 1.4 requires.
   */
  implicitRoomCreator: boolean;
}

const v10: RoomVersion = {
  id: '10',
  updatedRedactionRules: false,
  redactsInContent: false,
  roomIdFromCreateEvent: false,
  creatorsHaveInfinitePower: false,
  createEventInAuthEvents: true,
  stateResolution: 'v2',
  implicitRoomCreator: false,
};

const v11: RoomVersion = {
  ...v10,
  id: '11',
  updatedRedactionRules: true,
  redactsInContent: true,
  implicitRoomCreator: true,
};

const v12: RoomVersion = {
  ...v11,
  id: '12',
  roomIdFromCreateEvent: true,
  creatorsHaveInfinitePower: true,
  createEventInAuthEvents: false,
  stateResolution: 'v2.1',
};

export const ROOM_VERSIONS: Readonly<Record<RoomVersionId, RoomVersion>> = {
  '10': v10,
  '11': v11,
  '12': v12,
};

export const DEFAULT_ROOM_VERSION: RoomVersionId = '12';

export function getRoomVersion(id: string): RoomVersion | undefined {
  return Object.hasOwn(ROOM_VERSIONS, id) ? ROOM_VERSIONS[id as RoomVersionId] : undefined;
}
