import { sql } from 'kysely';
import type { Executor } from './accounts.repository.ts';
import type { ReportRow, RoomExpiryRow } from './database.ts';

/** Queries of the admin API (spec/admin.md): listing users, rooms and reports, blocks, notices, expiries. */

/** A LIKE pattern matching `text` anywhere, with LIKE's wildcards in it taken literally. */
export function containsPattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

export const USER_ORDER = [
  'name',
  'is_guest',
  'admin',
  'user_type',
  'deactivated',
  'shadow_banned',
  'displayname',
  'avatar_url',
  'creation_ts',
  'last_seen_ts',
  'locked',
] as const;
export type UserOrder = (typeof USER_ORDER)[number];

export interface UserFilter {
  userId?: string;
  name?: string;
  deactivated?: boolean;
  locked?: boolean;
  admins?: boolean;
}

export interface UserListRow {
  user_id: string;
  display_name: string | null;
  avatar_url: string | null;
  is_admin: boolean;
  deactivated: boolean;
  locked: boolean;
  suspended: boolean;
  shadow_banned: boolean;
  erased: boolean;
  user_type: string | null;
  created_ts: number;
  last_seen_ts: number | null;
}

function userQuery(db: Executor, f: UserFilter) {
  let q = db.selectFrom('users');
  if (f.userId !== undefined) q = q.where('users.user_id', 'ilike', containsPattern(f.userId));
  if (f.name !== undefined) {
    const p = containsPattern(f.name);
    q = q.where((eb) => eb.or([eb('users.user_id', 'ilike', p), eb('users.display_name', 'ilike', p)]));
  }
  if (f.deactivated !== true) q = q.where('users.deactivated', '=', false);
  if (f.locked !== true) q = q.where('users.locked', '=', false);
  if (f.admins !== undefined) q = q.where('users.is_admin', '=', f.admins);
  return q;
}

const USER_COLUMNS = {
  name: 'users.user_id',
  is_guest: 'users.user_id',
  admin: 'users.is_admin',
  user_type: 'users.user_type',
  deactivated: 'users.deactivated',
  shadow_banned: 'users.shadow_banned',
  displayname: 'users.display_name',
  avatar_url: 'users.avatar_url',
  creation_ts: 'users.created_ts',
  last_seen_ts: 'last_seen_ts',
  locked: 'users.locked',
} as const;

export async function listUsers(
  db: Executor,
  f: UserFilter,
  page: { from: number; limit: number; orderBy: UserOrder; dir: 'f' | 'b' },
): Promise<{ rows: UserListRow[]; total: number }> {
  const direction = page.dir === 'b' ? 'desc' : 'asc';
  const rows = await userQuery(db, f)
    .select([
      'users.user_id',
      'users.display_name',
      'users.avatar_url',
      'users.is_admin',
      'users.deactivated',
      'users.locked',
      'users.suspended',
      'users.shadow_banned',
      'users.erased',
      'users.user_type',
      'users.created_ts',
    ])
    .select((eb) =>
      eb
        .selectFrom('devices')
        .select((d) => d.fn.max('devices.last_seen_ts').as('m'))
        .whereRef('devices.user_id', '=', 'users.user_id')
        .as('last_seen_ts'),
    )
    .orderBy(sql.ref(USER_COLUMNS[page.orderBy]), sql.raw(`${direction} nulls last`))
    .orderBy('users.user_id', direction)
    .offset(page.from)
    .limit(page.limit)
    .execute();
  const count = await userQuery(db, f)
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  return {
    rows: rows.map((r) => ({ ...r, last_seen_ts: r.last_seen_ts === null ? null : Number(r.last_seen_ts) })),
    total: Number(count.n),
  };
}

export async function joinedRoomsOf(db: Executor, userId: string): Promise<string[]> {
  const rows = await db
    .selectFrom('memberships')
    .select('room_id')
    .where('user_id', '=', userId)
    .where('membership', '=', 'join')
    .orderBy('room_id')
    .execute();
  return rows.map((r) => r.room_id);
}

/** Rooms where the user is joined, invited or knocking: what deactivation leaves. */
export async function activeMembershipsOf(db: Executor, userId: string): Promise<string[]> {
  const rows = await db
    .selectFrom('memberships')
    .select('room_id')
    .where('user_id', '=', userId)
    .where('membership', 'in', ['join', 'invite', 'knock'])
    .orderBy('room_id')
    .execute();
  return rows.map((r) => r.room_id);
}

// --- rooms ---------------------------------------------------------------------------------

export const ROOM_ORDER = [
  'name',
  'canonical_alias',
  'joined_members',
  'joined_local_members',
  'version',
  'creator',
  'encryption',
  'federatable',
  'public',
  'join_rules',
  'guest_access',
  'history_visibility',
  'state_events',
] as const;
export type RoomOrder = (typeof ROOM_ORDER)[number];

export interface RoomListRow {
  room_id: string;
  name: string | null;
  canonical_alias: string | null;
  topic: string | null;
  avatar: string | null;
  joined_members: number;
  joined_local_members: number;
  version: string;
  creator: string;
  encryption: string | null;
  federatable: boolean;
  public: boolean;
  join_rules: string | null;
  guest_access: string | null;
  history_visibility: string | null;
  state_events: number;
  room_type: string | null;
  blocked: boolean;
}

/**
 * The rooms' summary as the admin API lists them, read from the current state. One statement;
 * `roomId` narrows it to one room.
 */
function roomSummaries(serverName: string, roomId?: string) {
  const field = (type: string, path: string) => sql<string | null>`(
      select p.json->'content'->>${path} from current_state cs join pdus p on p.event_id = cs.event_id
      where cs.room_id = r.room_id and cs.type = ${type} and cs.state_key = '')`;
  const localSuffix = `%:${serverName.replace(/[\\%_]/g, (c) => `\\${c}`)}`;
  return sql<RoomListRow>`
    select * from (
      select r.room_id, r.room_version as version, r.creator, r.published as public,
        ${field('m.room.name', 'name')} as name,
        ${field('m.room.canonical_alias', 'alias')} as canonical_alias,
        ${field('m.room.topic', 'topic')} as topic,
        ${field('m.room.avatar', 'url')} as avatar,
        ${field('m.room.encryption', 'algorithm')} as encryption,
        ${field('m.room.join_rules', 'join_rule')} as join_rules,
        ${field('m.room.guest_access', 'guest_access')} as guest_access,
        ${field('m.room.history_visibility', 'history_visibility')} as history_visibility,
        ${field('m.room.create', 'type')} as room_type,
        coalesce(${field('m.room.create', 'm.federate')}, 'true') <> 'false' as federatable,
        (select count(*) from memberships m where m.room_id = r.room_id and m.membership = 'join')::int
          as joined_members,
        (select count(*) from memberships m where m.room_id = r.room_id and m.membership = 'join'
          and m.user_id like ${localSuffix})::int as joined_local_members,
        (select count(*) from current_state cs where cs.room_id = r.room_id)::int as state_events,
        exists (select 1 from blocked_rooms b where b.room_id = r.room_id) as blocked
      from rooms r
      ${roomId !== undefined ? sql`where r.room_id = ${roomId}` : sql``}
    ) s`;
}

export async function listRooms(
  db: Executor,
  serverName: string,
  opts: { searchTerm?: string; from: number; limit: number; orderBy: RoomOrder; dir: 'f' | 'b' },
): Promise<{ rows: RoomListRow[]; total: number }> {
  const where =
    opts.searchTerm !== undefined
      ? sql`where s.name ilike ${containsPattern(opts.searchTerm)} or s.canonical_alias ilike ${containsPattern(opts.searchTerm)} or s.room_id ilike ${containsPattern(opts.searchTerm)}`
      : sql``;
  const direction = sql.raw(opts.dir === 'b' ? 'desc' : 'asc');
  // The order column comes from ROOM_ORDER only.
  const column = sql.ref(`s.${opts.orderBy}`);
  const base = roomSummaries(serverName);
  const rows = await sql<RoomListRow>`
    ${base} ${where} order by ${column} ${direction} nulls last, s.room_id ${direction}
    offset ${opts.from} limit ${opts.limit}`.execute(db);
  const total = await sql<{ n: number }>`select count(*)::int as n from (${base} ${where}) t`.execute(db);
  return { rows: rows.rows, total: Number(total.rows[0]?.n ?? 0) };
}

export async function roomSummary(
  db: Executor,
  serverName: string,
  roomId: string,
): Promise<RoomListRow | undefined> {
  const rows = await roomSummaries(serverName, roomId).execute(db);
  return rows.rows[0];
}

export async function joinedMembers(db: Executor, roomId: string): Promise<string[]> {
  const rows = await db
    .selectFrom('memberships')
    .select('user_id')
    .where('room_id', '=', roomId)
    .where('membership', '=', 'join')
    .orderBy('user_id')
    .execute();
  return rows.map((r) => r.user_id);
}

export async function membersIn(db: Executor, roomId: string, memberships: string[]): Promise<string[]> {
  const rows = await db
    .selectFrom('memberships')
    .select('user_id')
    .where('room_id', '=', roomId)
    .where('membership', 'in', memberships)
    .orderBy('user_id')
    .execute();
  return rows.map((r) => r.user_id);
}

export async function isRoomBlocked(
  db: Executor,
  roomId: string,
): Promise<{ blocked_by: string | null } | undefined> {
  return db.selectFrom('blocked_rooms').select('blocked_by').where('room_id', '=', roomId).executeTakeFirst();
}

export async function setRoomBlocked(
  db: Executor,
  roomId: string,
  blocked: boolean,
  by: string,
  ts: number,
): Promise<void> {
  if (!blocked) {
    await db.deleteFrom('blocked_rooms').where('room_id', '=', roomId).execute();
    return;
  }
  await db
    .insertInto('blocked_rooms')
    .values({ room_id: roomId, blocked_by: by, ts })
    .onConflict((c) => c.column('room_id').doNothing())
    .execute();
}

// --- reports -------------------------------------------------------------------------------

export async function insertReport(db: Executor, row: Omit<ReportRow, 'id'>): Promise<number> {
  const r = await db.insertInto('reports').values(row).returning('id').executeTakeFirstOrThrow();
  return Number(r.id);
}

export interface ReportFilter {
  roomId?: string;
  reporter?: string;
  eventSender?: string;
  kind?: ReportRow['kind'];
}

function reportQuery(db: Executor, f: ReportFilter) {
  let q = db.selectFrom('reports').leftJoin('pdus', 'pdus.event_id', 'reports.event_id');
  if (f.roomId !== undefined) q = q.where('reports.room_id', '=', f.roomId);
  if (f.reporter !== undefined) q = q.where('reports.reporter', '=', f.reporter);
  if (f.eventSender !== undefined) q = q.where('pdus.sender', '=', f.eventSender);
  if (f.kind !== undefined) q = q.where('reports.kind', '=', f.kind);
  return q;
}

export type ReportListRow = ReportRow & { sender: string | null };

export async function listReports(
  db: Executor,
  f: ReportFilter,
  page: { from: number; limit: number; dir: 'f' | 'b' },
): Promise<{ rows: ReportListRow[]; total: number }> {
  // Newest first by default, as Synapse lists them.
  const direction = page.dir === 'f' ? 'asc' : 'desc';
  const rows = await reportQuery(db, f)
    .selectAll('reports')
    .select('pdus.sender')
    .orderBy('reports.received_ts', direction)
    .orderBy('reports.id', direction)
    .offset(page.from)
    .limit(page.limit)
    .execute();
  const count = await reportQuery(db, f)
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow();
  return { rows: rows.map((r) => ({ ...r, id: Number(r.id) })), total: Number(count.n) };
}

export async function findReport(db: Executor, id: number): Promise<ReportListRow | undefined> {
  const row = await db
    .selectFrom('reports')
    .leftJoin('pdus', 'pdus.event_id', 'reports.event_id')
    .selectAll('reports')
    .select('pdus.sender')
    .where('reports.id', '=', id)
    .executeTakeFirst();
  return row && { ...row, id: Number(row.id) };
}

export async function deleteReport(db: Executor, id: number): Promise<boolean> {
  const r = await db.deleteFrom('reports').where('id', '=', id).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

// --- server notices ------------------------------------------------------------------------

export async function noticeRoomOf(db: Executor, userId: string): Promise<string | undefined> {
  const row = await db
    .selectFrom('server_notice_rooms')
    .select('room_id')
    .where('user_id', '=', userId)
    .executeTakeFirst();
  return row?.room_id;
}

export async function setNoticeRoom(db: Executor, userId: string, roomId: string): Promise<void> {
  await db
    .insertInto('server_notice_rooms')
    .values({ user_id: userId, room_id: roomId })
    .onConflict((c) => c.column('user_id').doUpdateSet({ room_id: roomId }))
    .execute();
}

// --- expiries ------------------------------------------------------------------------------

export async function upsertExpiry(db: Executor, row: Omit<RoomExpiryRow, 'attempts' | 'claimed_until'>) {
  await db
    .insertInto('room_expiries')
    .values({ ...row, claimed_until: null })
    .onConflict((c) =>
      c.columns(['room_id', 'user_id', 'kind']).doUpdateSet({
        expires_ts: row.expires_ts,
        set_by: row.set_by,
        level_after: row.level_after,
        created_ts: row.created_ts,
        claimed_until: null,
        attempts: 0,
      }),
    )
    .execute();
}

export async function deleteExpiry(
  db: Executor,
  roomId: string,
  userId: string,
  kind: RoomExpiryRow['kind'],
): Promise<boolean> {
  const r = await db
    .deleteFrom('room_expiries')
    .where('room_id', '=', roomId)
    .where('user_id', '=', userId)
    .where('kind', '=', kind)
    .executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

export function expiriesOfRoom(db: Executor, roomId: string): Promise<RoomExpiryRow[]> {
  return db
    .selectFrom('room_expiries')
    .selectAll()
    .where('room_id', '=', roomId)
    .orderBy('expires_ts')
    .orderBy('user_id')
    .execute();
}

/**
 * Claims up to `limit` due expiries for `leaseMs` (unclaimed, or whose claim lapsed: a process
 * that died mid-way). Runs inside the caller's transaction, which holds the job's advisory lock.
 */
export async function claimDueExpiries(
  db: Executor,
  now: number,
  leaseMs: number,
  limit: number,
): Promise<RoomExpiryRow[]> {
  const due = await db
    .selectFrom('room_expiries')
    .selectAll()
    .where('expires_ts', '<=', now)
    .where((eb) => eb.or([eb('claimed_until', 'is', null), eb('claimed_until', '<', now)]))
    .orderBy('expires_ts')
    .limit(limit)
    .execute();
  for (const row of due) {
    await db
      .updateTable('room_expiries')
      .set((eb) => ({ claimed_until: now + leaseMs, attempts: eb('attempts', '+', 1) }))
      .where('room_id', '=', row.room_id)
      .where('user_id', '=', row.user_id)
      .where('kind', '=', row.kind)
      .execute();
  }
  return due;
}

/** Takes the job's transaction-scoped advisory lock; false when another process holds it. */
export async function tryJobLock(db: Executor, key: number): Promise<boolean> {
  const r = await sql<{ locked: boolean }>`select pg_try_advisory_xact_lock(${key}) as locked`.execute(db);
  return r.rows[0]?.locked === true;
}
