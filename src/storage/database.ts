import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';
import type { JsonObject } from '../protocol/json.ts';

/** Table types. bigint columns are read back as numbers (all our values are below 2^53). */
export interface UsersTable {
  user_id: string;
  localpart: string;
  password_hash: string | null;
  display_name: string | null;
  avatar_url: string | null;
  is_admin: Generated<boolean>;
  deactivated: Generated<boolean>;
  created_ts: number;
  /** Migration 0010 (spec/admin.md). */
  locked: Generated<boolean>;
  suspended: Generated<boolean>;
  shadow_banned: Generated<boolean>;
  erased: Generated<boolean>;
  user_type: Generated<string | null>;
}

export interface DevicesTable {
  user_id: string;
  device_id: string;
  display_name: string | null;
  last_seen_ts: number | null;
  last_seen_ip: string | null;
  created_ts: number;
}

export interface AccessTokensTable {
  token_hash: string;
  user_id: string;
  device_id: string;
  created_ts: number;
  /** When the token stops working; null: never (migration 0017). */
  expires_ts: ColumnType<number | null, number | null | undefined, number | null>;
  /** The refresh token given with it, if any. */
  refresh_token_hash: ColumnType<string | null, string | null | undefined, string | null>;
}

/** Refresh tokens, by SHA-256 (migration 0017, spec/account.md). */
export interface RefreshTokensTable {
  token_hash: string;
  user_id: string;
  device_id: string;
  /** The refresh token this one replaced, usable until this one or its access token is first used. */
  previous_hash: string | null;
  created_ts: number;
  /** When the refresh token stops working; null: never. */
  expires_ts: ColumnType<number | null, number | null | undefined, number | null>;
}

export interface AccountDataTable {
  user_id: string;
  room_id: string;
  type: string;
  content: ColumnType<JsonObject, string, string>;
  stream_id: number;
}

export interface RegistrationTokensTable {
  token: string;
  uses_allowed: number | null;
  pending: Generated<number>;
  completed: Generated<number>;
  expiry_time: number | null;
  created_ts: number;
}

export interface UiaSessionsTable {
  session_id: string;
  kind: string;
  user_id: string | null;
  completed: ColumnType<string[], string, string>;
  params: ColumnType<JsonObject, string, string>;
  data: ColumnType<JsonObject, string, string>;
  created_ts: number;
}

export interface ServerSigningKeysTable {
  key_id: string;
  seed: string;
  public_key: string;
  created_ts: number;
  expired_ts: number | null;
}

export interface RemoteServerKeysTable {
  server_name: string;
  key_id: string;
  public_key: string;
  valid_until_ts: number | null;
  expired_ts: number | null;
  fetched_ts: number;
  fetched_from: string;
}

export interface RemoteServerKeyResponsesTable {
  server_name: string;
  response: string;
  valid_until_ts: number;
  fetched_ts: number;
}

export interface RoomsTable {
  room_id: string;
  room_version: string;
  creator: string;
  published: Generated<boolean>;
  created_ts: number;
  /** The state resolved across the room's forward extremities (migration 0005). */
  current_state_group: number | null;
}

export interface StateGroupsTable {
  id: number;
  room_id: string;
  prev_group: number | null;
  chain_length: number;
}

export interface StateGroupEntriesTable {
  group_id: number;
  type: string;
  state_key: string;
  event_id: string;
}

export interface EventsTable {
  stream_ordering: number;
  event_id: string;
  room_id: string;
  type: string;
  state_key: string | null;
  sender: string;
  membership: string | null;
  depth: number;
  origin_server_ts: number;
  state_group_before: number;
  state_group_after: number;
  /** The room's resolved current state group once this event was persisted. */
  room_state_group: number;
  json: ColumnType<JsonObject, string, string>;
  redacted_by: string | null;
}

/**
 * Every event this server holds (migration 0005): the timeline (`events` is the view of the rows
 * with a stream position), outliers, rejected and soft-failed events.
 */
export interface PdusTable {
  stream_ordering: number | null;
  event_id: string;
  room_id: string;
  type: string;
  state_key: string | null;
  sender: string;
  membership: string | null;
  depth: number;
  origin_server_ts: number;
  state_group_before: number | null;
  state_group_after: number | null;
  json: ColumnType<JsonObject, string, string>;
  redacted_by: string | null;
  outlier: Generated<boolean>;
  rejected_reason: string | null;
  soft_failed: Generated<boolean>;
  origin: string | null;
  received_ts: number | null;
  outbound: Generated<boolean>;
  redacts: string | null;
  room_state_group: number | null;
}

export interface EventEdgesTable {
  event_id: string;
  prev_event_id: string;
  room_id: string;
}

export interface EventAuthEdgesTable {
  event_id: string;
  auth_event_id: string;
}

export interface RoomBackwardExtremitiesTable {
  room_id: string;
  event_id: string;
}

export interface FederationDestinationsTable {
  destination: string;
  retry_last_ts: number | null;
  retry_interval_ms: Generated<number>;
  failure_count: Generated<number>;
  last_success_ts: number | null;
  last_successful_stream_ordering: number | null;
}

export interface FederationDestinationRoomsTable {
  destination: string;
  room_id: string;
  stream_ordering: number;
  since_stream_ordering: number;
}

export interface FederationQueuedEdusTable {
  id: Generated<number>;
  destination: string;
  edu_type: string;
  content: ColumnType<JsonObject, string, string>;
  created_ts: number;
}

export interface FederationReceivedTxnsTable {
  origin: string;
  txn_id: string;
  response: ColumnType<JsonObject, string, string>;
  received_ts: number;
}

export interface RoomForwardExtremitiesTable {
  room_id: string;
  event_id: string;
}

export interface CurrentStateTable {
  room_id: string;
  type: string;
  state_key: string;
  event_id: string;
}

export interface MembershipsTable {
  room_id: string;
  user_id: string;
  membership: string;
  event_id: string;
  stream_ordering: number;
  forgotten: Generated<boolean>;
}

export interface RoomAliasesTable {
  alias: string;
  room_id: string;
  creator: string;
  created_ts: number;
}

export interface EventTxnsTable {
  user_id: string;
  device_id: string;
  room_id: string;
  txn_id: string;
  event_id: string;
  created_ts: number;
}

export interface ReceiptsTable {
  room_id: string;
  user_id: string;
  receipt_type: string;
  thread_id: string;
  event_id: string;
  ts: number;
  stream_ordering: number;
}

export interface FiltersTable {
  user_id: string;
  filter_id: string;
  filter: ColumnType<JsonObject, string, string>;
  created_ts: number;
}

export interface RoomKeyBackupVersionsTable {
  user_id: string;
  version: number;
  algorithm: string;
  auth_data: ColumnType<JsonObject, string, string>;
  etag: Generated<number>;
  deleted: Generated<boolean>;
  created_ts: number;
}

export interface RoomKeyBackupKeysTable {
  user_id: string;
  version: number;
  room_id: string;
  session_id: string;
  first_message_index: number;
  forwarded_count: number;
  is_verified: boolean;
  session_data: ColumnType<JsonObject, string, string>;
}

/** Signed JSON is stored as text (see migration 0003); repositories parse it. */
export interface E2eDeviceKeysTable {
  user_id: string;
  device_id: string;
  key_json: string;
  ed25519_key: string;
  curve25519_key: string | null;
  updated_ts: number;
}

export interface E2eOneTimeKeysTable {
  id: Generated<number>;
  user_id: string;
  device_id: string;
  algorithm: string;
  key_id: string;
  key_json: string;
}

export interface E2eFallbackKeysTable {
  user_id: string;
  device_id: string;
  algorithm: string;
  key_id: string;
  key_json: string;
  used: Generated<boolean>;
}

export type CrossSigningUsage = 'master' | 'self_signing' | 'user_signing';

export interface E2eCrossSigningKeysTable {
  user_id: string;
  usage: CrossSigningUsage;
  public_key: string;
  key_json: string;
  updated_ts: number;
}

export interface E2eCrossSigningSignaturesTable {
  signer_user_id: string;
  signer_key_id: string;
  target_user_id: string;
  /** A device ID, or the public key of a master key. */
  target_key_id: string;
  signature: string;
}

/** The cache of remote users' device lists (migration 0018); JSON as text, like the local keys. */
export interface RemoteDeviceListsTable {
  user_id: string;
  stream_id: number;
  stale: boolean;
  updated_ts: number;
}

export interface RemoteDeviceKeysTable {
  user_id: string;
  device_id: string;
  key_json: string | null;
  ed25519_key: string | null;
  display_name: string | null;
}

export interface RemoteCrossSigningKeysTable {
  user_id: string;
  usage: 'master' | 'self_signing';
  public_key: string;
  key_json: string;
}

export interface DeviceListChangesTable {
  stream_position: number;
  user_id: string;
  /** When set, only this user sees the change. */
  observer_id: string | null;
}

export interface ToDeviceMessagesTable {
  stream_position: number;
  recipient_user_id: string;
  recipient_device_id: string;
  sender: string;
  type: string;
  content: string;
}

/** Per local user, the stream_id of their latest m.device_list_update (migration 0019). */
export interface DeviceListOutboundTable {
  user_id: string;
  stream_id: number;
  updated_ts: number;
}

/** m.direct_to_device messages received, by origin and message_id, to deliver each once. */
export interface FederationInboundToDeviceTable {
  origin: string;
  message_id: string;
  received_ts: number;
}

export interface ToDeviceTxnsTable {
  user_id: string;
  device_id: string;
  txn_id: string;
  created_ts: number;
}

/** One audited action; `details` never holds a secret or message content. */
export interface AuditLogTable {
  id: Generated<number>;
  ts: number;
  action: string;
  actor: string | null;
  target: string | null;
  address: string | null;
  details: ColumnType<JsonObject, string, string>;
}

/** Stripped state that came with a remote invite or knock (migration 0013). */
export interface RoomStrippedStateTable {
  event_id: string;
  room_id: string;
  user_id: string;
  state: ColumnType<JsonObject[], string, string>;
  received_ts: number;
}

/** One media ID of this server (spec/media.md); pending while `uploaded_ts` is null. */
export interface MediaTable {
  media_id: string;
  user_id: string;
  created_ts: number;
  unused_expires_ts: number | null;
  uploaded_ts: number | null;
  content_type: string | null;
  upload_name: string | null;
  size: number | null;
  sha256: string | null;
  quarantined_ts: number | null;
  quarantined_by: string | null;
  /** When the last event naming the media was purged or deleted (migration 0014). */
  unreferenced_ts: number | null;
}

/** A stored event whose content names a media of this server (migration 0014). */
export interface MediaReferencesTable {
  event_id: string;
  media_id: string;
  room_id: string;
}

/** A thumbnail made of a media, kept in the media store under its SHA-256. */
export interface MediaThumbnailsTable {
  media_id: string;
  width: number;
  height: number;
  method: string;
  animated: boolean;
  content_type: string;
  size: number;
  sha256: string;
  created_ts: number;
}

/** A media of another server, fetched and kept (migration 0020, spec/media.md). */
export interface RemoteMediaTable {
  origin: string;
  media_id: string;
  fetched_ts: number;
  content_type: string;
  upload_name: string | null;
  size: number;
  sha256: string;
}

/** A thumbnail of a remote media, asked of its server or made here (migration 0020). */
export interface RemoteMediaThumbnailsTable {
  origin: string;
  media_id: string;
  width: number;
  height: number;
  method: string;
  animated: boolean;
  content_type: string;
  size: number;
  sha256: string;
  created_ts: number;
}

/** Admin tables (migration 0010, spec/admin.md). */
export interface BlockedRoomsTable {
  room_id: string;
  blocked_by: string | null;
  ts: number;
}

export interface ReportsTable {
  id: Generated<number>;
  kind: 'event' | 'room' | 'user';
  received_ts: number;
  reporter: string;
  room_id: string | null;
  event_id: string | null;
  target_user_id: string | null;
  reason: string | null;
  score: number | null;
}

export interface ServerNoticeRoomsTable {
  user_id: string;
  room_id: string;
}

/** Changes a user made to their push rules (migrations/0016_push.ts). */
export interface PushRuleChangesTable {
  user_id: string;
  rules: ColumnType<JsonObject, string, string>;
  updated_ts: number;
}

export interface PushersTable {
  user_id: string;
  app_id: string;
  pushkey: string;
  kind: string;
  app_display_name: string;
  device_display_name: string;
  profile_tag: string | null;
  lang: string;
  data: ColumnType<JsonObject, string, string>;
  pushkey_ts: number;
  device_id: string | null;
}

export interface PushNotificationsTable {
  user_id: string;
  event_id: string;
  room_id: string;
  stream_ordering: number;
  actions: ColumnType<unknown[], string, string>;
  highlight: boolean;
  ts: number;
}

export interface PushQueueTable {
  id: Generated<number>;
  user_id: string;
  app_id: string;
  pushkey: string;
  event_id: string;
  room_id: string;
  tweaks: ColumnType<JsonObject, string, string>;
  attempts: Generated<number>;
  due_ts: number;
  created_ts: number;
}

export interface PushProgressTable {
  name: string;
  position: number;
}

export interface RoomExpiriesTable {
  room_id: string;
  user_id: string;
  kind: 'membership' | 'role';
  expires_ts: number;
  set_by: string;
  level_after: number | null;
  created_ts: number;
  claimed_until: number | null;
  attempts: Generated<number>;
}

/** Accounts locked or suspended (migration 0011, spec/detection.md). */
export interface DetectionNoticeRoomsTable {
  name: string;
  room_id: string;
}

/** A local user's presence (migration 0012). */
export interface PresenceTable {
  user_id: string;
  presence: string;
  status_msg: string | null;
  last_active_ts: number;
  stream_ordering: number;
}

/** A timeline event's `m.relates_to` (migration 0012). */
export interface EventRelationsTable {
  event_id: string;
  room_id: string;
  parent_id: string;
  rel_type: string;
  type: string;
  sender: string;
  key: string | null;
  stream_ordering: number;
}

/** Migration 0015 (spec/search.md): the full-text index of searchable events. */
export interface EventSearchTable {
  event_id: string;
  room_id: string;
  sender: string;
  /** `content.body`, `content.name` or `content.topic`. */
  key: string;
  /** A tsvector, written with to_tsvector and read only by the search query. */
  vector: string;
  stream_ordering: number;
}

export interface Database {
  users: UsersTable;
  devices: DevicesTable;
  access_tokens: AccessTokensTable;
  refresh_tokens: RefreshTokensTable;
  account_data: AccountDataTable;
  registration_tokens: RegistrationTokensTable;
  uia_sessions: UiaSessionsTable;
  server_signing_keys: ServerSigningKeysTable;
  remote_server_keys: RemoteServerKeysTable;
  remote_server_key_responses: RemoteServerKeyResponsesTable;
  rooms: RoomsTable;
  state_groups: StateGroupsTable;
  state_group_entries: StateGroupEntriesTable;
  /** The timeline: a view of `pdus` (rows with a stream position). */
  events: EventsTable;
  pdus: PdusTable;
  event_edges: EventEdgesTable;
  event_auth_edges: EventAuthEdgesTable;
  room_backward_extremities: RoomBackwardExtremitiesTable;
  federation_destinations: FederationDestinationsTable;
  federation_destination_rooms: FederationDestinationRoomsTable;
  federation_queued_edus: FederationQueuedEdusTable;
  federation_received_txns: FederationReceivedTxnsTable;
  room_forward_extremities: RoomForwardExtremitiesTable;
  current_state: CurrentStateTable;
  memberships: MembershipsTable;
  room_aliases: RoomAliasesTable;
  event_txns: EventTxnsTable;
  receipts: ReceiptsTable;
  filters: FiltersTable;
  room_key_backup_versions: RoomKeyBackupVersionsTable;
  room_key_backup_keys: RoomKeyBackupKeysTable;
  e2e_device_keys: E2eDeviceKeysTable;
  e2e_one_time_keys: E2eOneTimeKeysTable;
  e2e_fallback_keys: E2eFallbackKeysTable;
  e2e_cross_signing_keys: E2eCrossSigningKeysTable;
  e2e_cross_signing_signatures: E2eCrossSigningSignaturesTable;
  device_list_changes: DeviceListChangesTable;
  remote_device_lists: RemoteDeviceListsTable;
  remote_device_keys: RemoteDeviceKeysTable;
  remote_cross_signing_keys: RemoteCrossSigningKeysTable;
  to_device_messages: ToDeviceMessagesTable;
  to_device_txns: ToDeviceTxnsTable;
  device_list_outbound: DeviceListOutboundTable;
  federation_inbound_to_device: FederationInboundToDeviceTable;
  audit_log: AuditLogTable;
  room_stripped_state: RoomStrippedStateTable;
  media: MediaTable;
  media_thumbnails: MediaThumbnailsTable;
  remote_media: RemoteMediaTable;
  remote_media_thumbnails: RemoteMediaThumbnailsTable;
  blocked_rooms: BlockedRoomsTable;
  reports: ReportsTable;
  server_notice_rooms: ServerNoticeRoomsTable;
  room_expiries: RoomExpiriesTable;
  detection_notice_rooms: DetectionNoticeRoomsTable;
  presence: PresenceTable;
  event_relations: EventRelationsTable;
  media_references: MediaReferencesTable;
  event_search: EventSearchTable;
  push_rule_changes: PushRuleChangesTable;
  pushers: PushersTable;
  push_notifications: PushNotificationsTable;
  push_queue: PushQueueTable;
  push_progress: PushProgressTable;
}

export type UserRow = Selectable<UsersTable>;
export type AuditLogRow = Selectable<AuditLogTable>;
export type MediaRow = Selectable<MediaTable>;
export type NewMediaRow = Insertable<MediaTable>;
export type MediaThumbnailRow = Selectable<MediaThumbnailsTable>;
export type RemoteMediaRow = Selectable<RemoteMediaTable>;
export type RemoteMediaThumbnailRow = Selectable<RemoteMediaThumbnailsTable>;
export type NewUserRow = Insertable<UsersTable>;
export type DeviceRow = Selectable<DevicesTable>;
export type NewDeviceRow = Insertable<DevicesTable>;
export type RegistrationTokenRow = Selectable<RegistrationTokensTable>;
export type UiaSessionRow = Selectable<UiaSessionsTable>;
export type ServerSigningKeyRow = Selectable<ServerSigningKeysTable>;
export type RemoteServerKeyRow = Selectable<RemoteServerKeysTable>;
export type EventRow = Selectable<EventsTable>;
export type PduRow = Selectable<PdusTable>;
export type MembershipRow = Selectable<MembershipsTable>;
export type RoomRow = Selectable<RoomsTable>;
export type RoomKeyBackupVersionRow = Selectable<RoomKeyBackupVersionsTable>;
export type RoomKeyBackupKeyRow = Selectable<RoomKeyBackupKeysTable>;
export type NewRoomKeyBackupKeyRow = Insertable<RoomKeyBackupKeysTable>;
export type DeviceKeysRow = Selectable<E2eDeviceKeysTable>;
export type CrossSigningKeyRow = Selectable<E2eCrossSigningKeysTable>;
export type CrossSigningSignatureRow = Selectable<E2eCrossSigningSignaturesTable>;
export type ReportRow = Selectable<ReportsTable>;
export type RoomExpiryRow = Selectable<RoomExpiriesTable>;
export type PusherRow = Selectable<PushersTable>;
export type PushQueueRow = Selectable<PushQueueTable>;
export type PushNotificationRow = Selectable<PushNotificationsTable>;
