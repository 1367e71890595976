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

export interface Database {
  users: UsersTable;
  devices: DevicesTable;
  access_tokens: AccessTokensTable;
  account_data: AccountDataTable;
  registration_tokens: RegistrationTokensTable;
  uia_sessions: UiaSessionsTable;
  server_signing_keys: ServerSigningKeysTable;
}

export type UserRow = Selectable<UsersTable>;
export type NewUserRow = Insertable<UsersTable>;
export type DeviceRow = Selectable<DevicesTable>;
export type NewDeviceRow = Insertable<DevicesTable>;
export type RegistrationTokenRow = Selectable<RegistrationTokensTable>;
export type UiaSessionRow = Selectable<UiaSessionsTable>;
export type ServerSigningKeyRow = Selectable<ServerSigningKeysTable>;
