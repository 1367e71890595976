/**
 * The redaction algorithm of every room version (rooms: v1-redactions fragment for v1-v5,
 * v6-redactions for v6 and v7, v8.md for v8, v9-redactions for v9 and v10, v11-redactions for v11
 * and v12).
 *
 * Redaction keeps only the parts of an event that the protocol needs, which is also what a
 * server signs and what the reference hash (and so the event ID) covers.
 */
import type { Pdu } from './event.ts';
import { isJsonObject, type JsonObject, type JsonValue } from './json.ts';
import type { RoomVersion } from './room-versions.ts';

/** Top-level keys kept by every version (v11-redactions list). */
const TOP_LEVEL_KEYS = [
  'event_id',
  'type',
  'room_id',
  'sender',
  'state_key',
  'content',
  'hashes',
  'signatures',
  'depth',
  'prev_events',
  'auth_events',
  'origin_server_ts',
] as const;

/** Top-level keys that room versions 1 to 10 also keep; version 11 stopped protecting them. */
const PRE_V11_TOP_LEVEL_KEYS = ['prev_state', 'origin', 'membership'] as const;

/**
 * Content keys kept per event type under the v1 rules (room versions 1 to 5). A Map, not an
 * object literal, so that event types such as `constructor` do not find Object.prototype members.
 * Later versions before 11 differ only in the keys {@link preV11ContentKeys} adds or drops.
 */
const V1_CONTENT_KEYS: ReadonlyMap<string, readonly string[]> = new Map(
  Object.entries({
    'm.room.member': ['membership'],
    'm.room.create': ['creator'],
    'm.room.join_rules': ['join_rule'],
    'm.room.power_levels': [
      'ban',
      'events',
      'events_default',
      'kick',
      'redact',
      'state_default',
      'users',
      'users_default',
    ],
    'm.room.history_visibility': ['history_visibility'],
    'm.room.aliases': ['aliases'],
  }),
);

/** The content keys kept for `type` in room versions 1 to 10. */
function preV11ContentKeys(type: string, roomVersion: RoomVersion): readonly string[] | undefined {
  if (type === 'm.room.aliases' && !roomVersion.redactionKeepsAliases) return undefined;
  const keys = V1_CONTENT_KEYS.get(type);
  if (type === 'm.room.join_rules' && roomVersion.redactionKeepsJoinRuleAllow) return [...keys!, 'allow'];
  if (type === 'm.room.member' && roomVersion.redactionKeepsJoinAuthoriser) {
    return [...keys!, 'join_authorised_via_users_server'];
  }
  return keys;
}

/**
 * Content keys kept per event type under the v11 rules (room versions 11 and 12). The create
 * event keeps all of its content and a member event keeps `third_party_invite.signed`; both are
 * handled in {@link redactContent} rather than here.
 */
const V11_CONTENT_KEYS: ReadonlyMap<string, readonly string[]> = new Map(
  Object.entries({
    'm.room.member': ['membership', 'join_authorised_via_users_server'],
    'm.room.join_rules': ['join_rule', 'allow'],
    'm.room.power_levels': [
      'ban',
      'events',
      'events_default',
      'invite',
      'kick',
      'redact',
      'state_default',
      'users',
      'users_default',
    ],
    'm.room.history_visibility': ['history_visibility'],
    'm.room.redaction': ['redacts'],
  }),
);

/**
 * Returns the redacted form of `event` for `roomVersion`; the input is not modified. The result
 * always has a `content` object, empty if nothing survives (or if the event had none).
 * Kept values are shared with the input, not copied: treat both as immutable.
 */
export function redactEvent(event: Pdu, roomVersion: RoomVersion): Pdu;
export function redactEvent(event: object, roomVersion: RoomVersion): JsonObject;
export function redactEvent(event: object, roomVersion: RoomVersion): JsonObject | Pdu {
  const source = event as Readonly<Record<string, JsonValue | undefined>>;
  const keep: readonly string[] = roomVersion.updatedRedactionRules
    ? TOP_LEVEL_KEYS
    : [...TOP_LEVEL_KEYS, ...PRE_V11_TOP_LEVEL_KEYS];
  const redacted: JsonObject = {};
  for (const key of keep) {
    const value = source[key];
    if (value !== undefined && Object.hasOwn(source, key)) redacted[key] = value;
  }
  const content = isJsonObject(source.content) ? source.content : {};
  redacted.content = redactContent(String(source.type), content, roomVersion);
  // Inside Conclave a v1/v2 event keeps the hashes of its references apart (see pdu-wire.ts);
  // they are part of its prev_events and auth_events on the wire, which redaction keeps.
  if (roomVersion.legacyEventFormat && source.reference_hashes !== undefined)
    redacted.reference_hashes = source.reference_hashes;
  return redacted;
}

/** The surviving part of `content` for an event of type `type` (see the module comment). */
export function redactContent(type: string, content: JsonObject, roomVersion: RoomVersion): JsonObject {
  if (!roomVersion.updatedRedactionRules) return pick(content, preV11ContentKeys(type, roomVersion));

  if (type === 'm.room.create') return { ...content };
  const kept = pick(content, V11_CONTENT_KEYS.get(type));
  if (type === 'm.room.member') {
    // v11: of `third_party_invite`, only its `signed` member survives (needed by the auth rules).
    const invite = content.third_party_invite;
    if (isJsonObject(invite)) kept.third_party_invite = pick(invite, ['signed']);
  }
  return kept;
}

function pick(source: JsonObject, keys: readonly string[] | undefined): JsonObject {
  const result: JsonObject = {};
  for (const key of keys ?? []) {
    const value = source[key];
    if (value !== undefined && Object.hasOwn(source, key)) result[key] = value;
  }
  return result;
}
