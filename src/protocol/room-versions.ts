/**
 * The room versions Conclave serves and the rules that differ between them.
 * Spec: rooms/v1.md to rooms/v12.md (and the fragments they include).
 */
export type RoomVersionId = '1' | '2' | '3' | '4' | '5' | '6' | '7' | '8' | '9' | '10' | '11' | '12';

export interface RoomVersion {
  id: RoomVersionId;
  /**
   * How event IDs are made. `legacy` (v1, v2): `$opaque:server`, chosen by the sending server and
   * carried in the event. `base64` (v3): `$` + the reference hash in unpadded standard base64.
   * `base64url` (v4+): `$` + the reference hash in URL-safe unpadded base64.
   */
  eventIdFormat: 'legacy' | 'base64' | 'base64url';
  /**
   * v1, v2: the wire format carries `event_id`, and `prev_events` and `auth_events` are lists of
   * `[event_id, {sha256: hash}]` pairs. Inside Conclave events always have ID lists (wire.ts
   * converts). Also: such events need a signature from the server of the event ID.
   */
  legacyEventFormat: boolean;
  /** v1 to v5: auth rule 4 special-cases `m.room.aliases` (state key = the sender's server). */
  specialCaseAliases: boolean;
  /** v1, v2: auth rule 11 decides `m.room.redaction` by the redact level or the event IDs' servers. */
  redactionAuthRule: boolean;
  /** v6+: the power levels rules also guard changes to `notifications` (v1-v5: only `events`). */
  notificationsInPowerLevelRules: boolean;
  /**
   * v6+: events must be canonical JSON (integers in range, no floats), else they are refused.
   * Before v6 floats in power levels are accepted and truncated.
   */
  strictCanonicalJson: boolean;
  /** v10+: power levels must be integers; v1-v9 also accept integer strings such as "50". */
  integerPowerLevels: boolean;
  /** v7+: the `knock` membership and join rule. */
  knocking: boolean;
  /** v8+: the `restricted` join rule and `join_authorised_via_users_server`. */
  restrictedJoins: boolean;
  /** v10+: the `knock_restricted` join rule. */
  knockRestricted: boolean;
  /** v5+: a signing key counts only for events whose origin_server_ts is within its valid_until_ts. */
  enforceKeyValidity: boolean;
  /** v1-v5: redaction keeps `aliases` in m.room.aliases content. */
  redactionKeepsAliases: boolean;
  /** v8+: redaction keeps `allow` in m.room.join_rules content. */
  redactionKeepsJoinRuleAllow: boolean;
  /** v9+: redaction keeps `join_authorised_via_users_server` in m.room.member content. */
  redactionKeepsJoinAuthoriser: boolean;
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
   * v11+: the room creator is the create event's `sender`; before, it is `content.creator`, which
   * auth rule 1.4 requires.
   */
  implicitRoomCreator: boolean;
}

const v1: RoomVersion = {
  id: '1',
  eventIdFormat: 'legacy',
  legacyEventFormat: true,
  specialCaseAliases: true,
  redactionAuthRule: true,
  notificationsInPowerLevelRules: false,
  strictCanonicalJson: false,
  integerPowerLevels: false,
  knocking: false,
  restrictedJoins: false,
  knockRestricted: false,
  enforceKeyValidity: false,
  redactionKeepsAliases: true,
  redactionKeepsJoinRuleAllow: false,
  redactionKeepsJoinAuthoriser: false,
  updatedRedactionRules: false,
  redactsInContent: false,
  roomIdFromCreateEvent: false,
  creatorsHaveInfinitePower: false,
  createEventInAuthEvents: true,
  stateResolution: 'v1',
  implicitRoomCreator: false,
};

/** v2: state resolution v2. */
const v2: RoomVersion = { ...v1, id: '2', stateResolution: 'v2' };

/** v3: event IDs are reference hashes; the redaction auth rule is gone. */
const v3: RoomVersion = {
  ...v2,
  id: '3',
  eventIdFormat: 'base64',
  legacyEventFormat: false,
  redactionAuthRule: false,
};

/** v4: URL-safe event IDs. */
const v4: RoomVersion = { ...v3, id: '4', eventIdFormat: 'base64url' };

/** v5: signing key validity periods. */
const v5: RoomVersion = { ...v4, id: '5', enforceKeyValidity: true };

/** v6: no aliases special case, notifications in the power rules, strict canonical JSON. */
const v6: RoomVersion = {
  ...v5,
  id: '6',
  specialCaseAliases: false,
  notificationsInPowerLevelRules: true,
  strictCanonicalJson: true,
  redactionKeepsAliases: false,
};

/** v7: knocking. */
const v7: RoomVersion = { ...v6, id: '7', knocking: true };

/** v8: restricted joins. */
const v8: RoomVersion = { ...v7, id: '8', restrictedJoins: true, redactionKeepsJoinRuleAllow: true };

/** v9: redaction keeps the authorising user of a restricted join. */
const v9: RoomVersion = { ...v8, id: '9', redactionKeepsJoinAuthoriser: true };

/** v10: integer power levels, knock_restricted. */
const v10: RoomVersion = { ...v9, id: '10', integerPowerLevels: true, knockRestricted: true };

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
  '1': v1,
  '2': v2,
  '3': v3,
  '4': v4,
  '5': v5,
  '6': v6,
  '7': v7,
  '8': v8,
  '9': v9,
  '10': v10,
  '11': v11,
  '12': v12,
};

/** Every room version, oldest first. */
export const ROOM_VERSION_IDS: readonly RoomVersionId[] = Object.keys(ROOM_VERSIONS)
  .map(Number)
  .sort((a, b) => a - b)
  .map((n) => String(n) as RoomVersionId);

export const DEFAULT_ROOM_VERSION: RoomVersionId = '12';

export function getRoomVersion(id: string): RoomVersion | undefined {
  return Object.hasOwn(ROOM_VERSIONS, id) ? ROOM_VERSIONS[id as RoomVersionId] : undefined;
}
