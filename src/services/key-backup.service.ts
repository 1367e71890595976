import { Type } from 'typebox';
import { errors, MatrixError } from '../errors.ts';
import { isValidRoomId } from '../protocol/identifiers.ts';
import type { JsonObject } from '../protocol/json.ts';
import type { Executor } from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';
import type {
  NewRoomKeyBackupKeyRow,
  RoomKeyBackupKeyRow,
  RoomKeyBackupVersionRow,
} from '../storage/database.ts';
import * as repo from '../storage/key-backup.repository.ts';
import type { Session } from './accounts.service.ts';

/**
 * Server-side key backups (client-server API, end-to-end encryption module). A user's backup
 * has numbered versions; keys are written only to the current one (the highest not deleted),
 * read from any live one. The server never looks inside `auth_data` or `session_data`: they
 * are objects kept as they came. Every operation acts on the logged-in user's own backups only;
 * there is no way to name another user's.
 */

/** Request schemas, shared with the routes. */
export const BackupAlgorithm = Type.String({ minLength: 1, maxLength: 255, pattern: '^[\\x21-\\x7E]+$' });
const AnyObject = Type.Record(Type.String(), Type.Unknown());

export const KeyBackupDataSchema = Type.Object({
  first_message_index: Type.Integer({ minimum: 0 }),
  forwarded_count: Type.Integer({ minimum: 0 }),
  is_verified: Type.Boolean(),
  session_data: AnyObject,
});

export const RoomKeyBackupSchema = Type.Object({
  sessions: Type.Record(Type.String(), KeyBackupDataSchema),
});

export const AllKeysSchema = Type.Object({
  rooms: Type.Record(Type.String(), RoomKeyBackupSchema),
});

export interface KeyBackupData {
  first_message_index: number;
  forwarded_count: number;
  is_verified: boolean;
  session_data: Record<string, unknown>;
}

export interface RoomKeyBackup {
  sessions: Record<string, KeyBackupData>;
}

export interface BackupInfo {
  algorithm: string;
  auth_data: JsonObject;
  count: number;
  etag: string;
  version: string;
}

export interface KeysUpdate {
  etag: string;
  count: number;
}

/** Versions are handed out as decimal integers from 1; anything else names no version. */
function parseVersion(version: string): number | undefined {
  if (!/^[1-9][0-9]{0,15}$/.test(version)) return undefined;
  const n = Number(version);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * PostgreSQL text and jsonb cannot hold NUL characters or unpaired UTF-16 surrogates; such input
 * would fail at the database as a 500, so it is refused first.
 */
function hasUnstorableText(text: string): boolean {
  return text.includes('\u0000') || /\p{Surrogate}/u.test(text);
}

function hasUnstorableJson(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') {
      if (hasUnstorableText(v)) return true;
    } else if (Array.isArray(v)) {
      stack.push(...v);
    } else if (typeof v === 'object' && v !== null) {
      for (const [k, child] of Object.entries(v)) {
        if (hasUnstorableText(k)) return true;
        stack.push(child);
      }
    }
  }
  return false;
}

function checkStorable(value: unknown, what: string): void {
  if (hasUnstorableJson(value)) {
    throw errors.badJson(`${what} contains a NUL character or an unpaired surrogate`);
  }
}

/** A path room ID: 400 M_INVALID_PARAM when it is not one. */
function checkRoomIdParam(roomId: string): void {
  if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
}

/** A path session ID: any non-empty text the database can hold. */
function checkSessionIdParam(sessionId: string): void {
  if (sessionId === '' || hasUnstorableText(sessionId)) throw errors.invalidParam('Not a valid session ID');
}

function unknownVersion(): MatrixError {
  return errors.notFound('Unknown backup version');
}

function toKeyData(row: RoomKeyBackupKeyRow): KeyBackupData {
  return {
    first_message_index: row.first_message_index,
    forwarded_count: row.forwarded_count,
    is_verified: row.is_verified,
    session_data: row.session_data,
  };
}

export class KeyBackupService {
  constructor(
    private readonly db: Db,
    private readonly now: () => number = Date.now,
  ) {}

  /** POST /room_keys/version: a new version, which becomes the current one. */
  async createVersion(
    session: Session,
    body: { algorithm: string; auth_data: Record<string, unknown> },
  ): Promise<{ version: string }> {
    checkStorable(body.auth_data, 'auth_data');
    const userId = session.userId;
    const version = await this.db.transaction().execute(async (trx) => {
      await repo.lockUserBackups(trx, userId);
      const next = (await repo.highestVersionNumber(trx, userId)) + 1;
      await repo.insertVersion(trx, {
        user_id: userId,
        version: next,
        algorithm: body.algorithm,
        auth_data: body.auth_data as JsonObject,
        created_ts: this.now(),
      });
      return next;
    });
    return { version: String(version) };
  }

  /** GET /room_keys/version and /room_keys/version/{version} (the current one when absent). */
  async getVersion(session: Session, version?: string): Promise<BackupInfo> {
    let row: RoomKeyBackupVersionRow | undefined;
    if (version === undefined) {
      row = await repo.currentVersion(this.db, session.userId);
      if (!row) throw errors.notFound('No current backup version');
    } else {
      row = await this.liveVersion(this.db, session.userId, version);
    }
    return {
      algorithm: row.algorithm,
      auth_data: row.auth_data,
      count: await repo.countKeys(this.db, session.userId, row.version),
      etag: String(row.etag),
      version: String(row.version),
    };
  }

  /**
   * PUT /room_keys/version/{version}: replaces `auth_data`. The algorithm cannot change, and a
   * `version` in the body must be the one in the path (both 400 M_INVALID_PARAM).
   */
  async updateVersion(
    session: Session,
    version: string,
    body: { algorithm: string; auth_data: Record<string, unknown>; version?: string },
  ): Promise<Record<string, never>> {
    if (body.version !== undefined && body.version !== version) {
      throw errors.invalidParam('The version in the body does not match the version in the path');
    }
    checkStorable(body.auth_data, 'auth_data');
    const userId = session.userId;
    await this.db.transaction().execute(async (trx) => {
      await repo.lockUserBackups(trx, userId);
      const row = await this.liveVersion(trx, userId, version);
      if (row.algorithm !== body.algorithm) {
        throw errors.invalidParam('The algorithm of a backup version cannot be changed');
      }
      await repo.updateAuthData(trx, userId, row.version, body.auth_data as JsonObject);
    });
    return {};
  }

  /**
   * DELETE /room_keys/version/{version}: the version and all its keys. Deleting a version
   * deleted before succeeds again; one that never existed is 404.
   */
  async deleteVersion(session: Session, version: string): Promise<Record<string, never>> {
    const userId = session.userId;
    const n = parseVersion(version);
    if (n === undefined) throw unknownVersion();
    await this.db.transaction().execute(async (trx) => {
      await repo.lockUserBackups(trx, userId);
      const row = await repo.findVersion(trx, userId, n);
      if (!row) throw unknownVersion();
      if (!row.deleted) await repo.markVersionDeleted(trx, userId, n);
    });
    return {};
  }

  /** PUT /room_keys/keys */
  async putAllKeys(
    session: Session,
    version: string,
    rooms: Record<string, RoomKeyBackup>,
  ): Promise<KeysUpdate> {
    const rows: Array<Omit<NewRoomKeyBackupKeyRow, 'user_id' | 'version'>> = [];
    for (const [roomId, room] of Object.entries(rooms)) {
      if (!isValidRoomId(roomId)) throw errors.badJson('rooms: a key is not a valid room ID');
      rows.push(...this.sessionRows(roomId, room.sessions));
    }
    return this.store(session.userId, version, rows);
  }

  /** PUT /room_keys/keys/{roomId} */
  async putRoomKeys(
    session: Session,
    version: string,
    roomId: string,
    sessions: Record<string, KeyBackupData>,
  ): Promise<KeysUpdate> {
    checkRoomIdParam(roomId);
    return this.store(session.userId, version, this.sessionRows(roomId, sessions));
  }

  /** PUT /room_keys/keys/{roomId}/{sessionId} */
  async putSessionKey(
    session: Session,
    version: string,
    roomId: string,
    sessionId: string,
    data: KeyBackupData,
  ): Promise<KeysUpdate> {
    checkRoomIdParam(roomId);
    checkSessionIdParam(sessionId);
    checkStorable(data.session_data, 'session_data');
    return this.store(session.userId, version, [this.keyRow(roomId, sessionId, data)]);
  }

  /** GET /room_keys/keys: every key of the version, by room (`{"rooms": {}}` when none). */
  async getAllKeys(session: Session, version: string): Promise<{ rooms: Record<string, RoomKeyBackup> }> {
    const row = await this.liveVersion(this.db, session.userId, version);
    const rooms: Record<string, RoomKeyBackup> = {};
    for (const key of await repo.findKeys(this.db, session.userId, row.version, {})) {
      rooms[key.room_id] ??= { sessions: {} };
      rooms[key.room_id]!.sessions[key.session_id] = toKeyData(key);
    }
    return { rooms };
  }

  /** GET /room_keys/keys/{roomId}: the room's keys (`{"sessions": {}}` when none). */
  async getRoomKeys(session: Session, version: string, roomId: string): Promise<RoomKeyBackup> {
    checkRoomIdParam(roomId);
    const row = await this.liveVersion(this.db, session.userId, version);
    const sessions: Record<string, KeyBackupData> = {};
    for (const key of await repo.findKeys(this.db, session.userId, row.version, { roomId })) {
      sessions[key.session_id] = toKeyData(key);
    }
    return { sessions };
  }

  /** GET /room_keys/keys/{roomId}/{sessionId}: one key; 404 M_NOT_FOUND when the backup lacks it. */
  async getSessionKey(
    session: Session,
    version: string,
    roomId: string,
    sessionId: string,
  ): Promise<KeyBackupData> {
    checkRoomIdParam(roomId);
    checkSessionIdParam(sessionId);
    const row = await this.liveVersion(this.db, session.userId, version);
    const [key] = await repo.findKeys(this.db, session.userId, row.version, { roomId, sessionId });
    if (!key) throw errors.notFound('No key for that session in this backup');
    return toKeyData(key);
  }

  /**
   * DELETE /room_keys/keys, /room_keys/keys/{roomId}, /room_keys/keys/{roomId}/{sessionId}:
   * allowed on any live version of the user's (the spec asks the current version only of
   * uploads). Deleting keys that are not there succeeds and leaves the etag as it was.
   */
  async deleteKeys(session: Session, version: string, scope: repo.KeyScope): Promise<KeysUpdate> {
    if (scope.roomId !== undefined) checkRoomIdParam(scope.roomId);
    if (scope.sessionId !== undefined) checkSessionIdParam(scope.sessionId);
    const userId = session.userId;
    return this.db.transaction().execute(async (trx) => {
      await repo.lockUserBackups(trx, userId);
      const row = await this.liveVersion(trx, userId, version);
      const deleted = await repo.deleteKeys(trx, userId, row.version, scope);
      const etag = deleted > 0 ? await repo.bumpEtag(trx, userId, row.version) : row.etag;
      return { etag: String(etag), count: await repo.countKeys(trx, userId, row.version) };
    });
  }

  private sessionRows(
    roomId: string,
    sessions: Record<string, KeyBackupData>,
  ): Array<Omit<NewRoomKeyBackupKeyRow, 'user_id' | 'version'>> {
    return Object.entries(sessions).map(([sessionId, data]) => {
      if (sessionId === '' || hasUnstorableText(sessionId)) {
        throw errors.badJson('sessions: a key is not a valid session ID');
      }
      checkStorable(data.session_data, 'session_data');
      return this.keyRow(roomId, sessionId, data);
    });
  }

  private keyRow(
    roomId: string,
    sessionId: string,
    data: KeyBackupData,
  ): Omit<NewRoomKeyBackupKeyRow, 'user_id' | 'version'> {
    return {
      room_id: roomId,
      session_id: sessionId,
      first_message_index: data.first_message_index,
      forwarded_count: data.forwarded_count,
      is_verified: data.is_verified,
      session_data: JSON.stringify(data.session_data),
    };
  }

  /**
   * Writes keys to the user's current version. No backup at all is 404 M_NOT_FOUND; any other
   * version (older, deleted, unknown or not a number) is 403 M_WRONG_ROOM_KEYS_VERSION with
   * `current_version`. The etag moves only when a key was added or replaced.
   */
  private async store(
    userId: string,
    version: string,
    rows: Array<Omit<NewRoomKeyBackupKeyRow, 'user_id' | 'version'>>,
  ): Promise<KeysUpdate> {
    return this.db.transaction().execute(async (trx) => {
      await repo.lockUserBackups(trx, userId);
      const current = await repo.currentVersion(trx, userId);
      if (!current) throw errors.notFound('Unknown backup version: there is no current backup');
      if (String(current.version) !== version) {
        throw new MatrixError(403, 'M_WRONG_ROOM_KEYS_VERSION', 'Wrong backup version', {
          current_version: String(current.version),
        });
      }
      const changed = await repo.storeKeys(
        trx,
        rows.map((r) => ({ ...r, user_id: userId, version: current.version })),
      );
      const etag = changed > 0 ? await repo.bumpEtag(trx, userId, current.version) : current.etag;
      return { etag: String(etag), count: await repo.countKeys(trx, userId, current.version) };
    });
  }

  /** A version of the user's that exists and is not deleted; 404 M_NOT_FOUND otherwise. */
  private async liveVersion(db: Executor, userId: string, version: string): Promise<RoomKeyBackupVersionRow> {
    const n = parseVersion(version);
    const row = n === undefined ? undefined : await repo.findVersion(db, userId, n);
    if (!row || row.deleted) throw unknownVersion();
    return row;
  }
}
