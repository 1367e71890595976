import { sql } from 'kysely';
import type { JsonObject } from '../protocol/json.ts';
import type { Executor } from './accounts.repository.ts';

/**
 * The queries of a retention purge (spec/retention.md). They run in the room's transaction and
 * work on temporary tables dropped at its commit:
 *   rp_old     events of the room older than the cut-off;
 *   rp_groups  state groups still needed (by the events that stay, with their chains);
 *   rp_keep    old events that stay: named by a needed state group, in the current state, a
 *              forward extremity, or in the auth chain of anything that stays;
 *   rp_purge   old events that go, and redactions of them.
 */

/** An event's age counts from the earlier of its claimed and its received time (migration 0008). */
const AGE = sql`least(p.origin_server_ts, coalesce(p.received_ts, p.origin_server_ts))`;

export interface PurgePlan {
  /** Events to delete. */
  purge: number;
  /** Old events that stay (their content pruned). */
  keep: number;
}

/** Builds the temporary tables for purging `roomId`'s events older than `beforeTs`. */
export async function planPurge(db: Executor, roomId: string, beforeTs: number): Promise<PurgePlan> {
  await sql`
    create temp table rp_old on commit drop as
    select p.event_id from pdus p where p.room_id = ${roomId} and ${AGE} < ${beforeTs}`.execute(db);
  await sql`alter table rp_old add primary key (event_id)`.execute(db);
  await sql`
    create temp table rp_anchor on commit drop as
    select p.event_id from pdus p
    where p.room_id = ${roomId} and not exists (select 1 from rp_old o where o.event_id = p.event_id)
    union
    select event_id from room_forward_extremities where room_id = ${roomId}`.execute(db);
  await sql`alter table rp_anchor add primary key (event_id)`.execute(db);
  await sql`
    create temp table rp_groups on commit drop as
    with recursive seed(id) as (
      select p.state_group_before from pdus p join rp_anchor a on a.event_id = p.event_id
      union select p.state_group_after from pdus p join rp_anchor a on a.event_id = p.event_id
      union select p.room_state_group from pdus p join rp_anchor a on a.event_id = p.event_id
      union select current_state_group from rooms where room_id = ${roomId}
    ), chain(id) as (
      select id from seed where id is not null
      union
      select g.prev_group from state_groups g join chain c on g.id = c.id where g.prev_group is not null
    )
    select id from chain`.execute(db);
  await sql`alter table rp_groups add primary key (id)`.execute(db);
  await sql`
    create temp table rp_keep on commit drop as
    with recursive k(id) as (
      select event_id from rp_anchor
      union select e.event_id from state_group_entries e join rp_groups g on g.id = e.group_id
      union select event_id from current_state where room_id = ${roomId}
      union select event_id from memberships where room_id = ${roomId}
      union
      select a.auth_event_id from event_auth_edges a join k on a.event_id = k.id
    )
    select o.event_id from rp_old o where exists (select 1 from k where k.id = o.event_id)`.execute(db);
  await sql`alter table rp_keep add primary key (event_id)`.execute(db);
  await sql`
    create temp table rp_purge on commit drop as
    select o.event_id from rp_old o where not exists (select 1 from rp_keep k where k.event_id = o.event_id)`.execute(
    db,
  );
  await sql`alter table rp_purge add primary key (event_id)`.execute(db);
  // Redactions of purged events (of any age) go with them, but for forward extremities.
  await sql`
    insert into rp_purge (event_id)
    select p.event_id from pdus p
    where p.room_id = ${roomId} and p.redacts in (select event_id from rp_purge)
      and p.event_id not in (select event_id from room_forward_extremities where room_id = ${roomId})
      and p.event_id not in (select event_id from rp_keep)
    on conflict do nothing`.execute(db);
  const counts = await sql<{ purge: number; keep: number }>`
    select (select count(*) from rp_purge)::int as purge, (select count(*) from rp_keep)::int as keep`.execute(
    db,
  );
  return counts.rows[0] ?? { purge: 0, keep: 0 };
}

export interface PurgeFigures {
  events: number;
  bytes: number;
  fromTs: number | null;
  toTs: number | null;
}

/** What the purge deletes: how many events, their stored size, and their time range. */
export async function purgeFigures(db: Executor): Promise<PurgeFigures> {
  const r = await sql<{ events: number; bytes: number | null; from_ts: number | null; to_ts: number | null }>`
    select count(*)::int as events, sum(octet_length(p.json::text))::bigint as bytes,
           min(p.origin_server_ts) as from_ts, max(p.origin_server_ts) as to_ts
    from pdus p join rp_purge x on x.event_id = p.event_id`.execute(db);
  const row = r.rows[0];
  return {
    events: row?.events ?? 0,
    bytes: Number(row?.bytes ?? 0),
    fromTs: row?.from_ts ?? null,
    toTs: row?.to_ts ?? null,
  };
}

/** Removes the media references of the purged events; returns the media they named. */
export async function releasePurgedMedia(db: Executor): Promise<string[]> {
  const r = await sql<{ media_id: string }>`
    delete from media_references where event_id in (select event_id from rp_purge)
    returning media_id`.execute(db);
  return [...new Set(r.rows.map((x) => x.media_id))];
}

export interface KeptRow {
  event_id: string;
  type: string;
  json: JsonObject;
  in_current_state: boolean;
  forward_extremity: boolean;
}

/** The columns of a KeptRow, from `pdus p`. */
function keptColumns(roomId: string) {
  return sql`p.event_id, p.type, p.json,
      exists (select 1 from current_state c where c.room_id = ${roomId} and c.event_id = p.event_id) as in_current_state,
      exists (select 1 from room_forward_extremities f where f.room_id = ${roomId} and f.event_id = p.event_id) as forward_extremity`;
}

/**
 * Kept old events, and kept events redacted by a purged redaction, in pages (after `afterId`),
 * for pruning.
 */
export async function keptRows(
  db: Executor,
  roomId: string,
  afterId: string,
  limit: number,
): Promise<KeptRow[]> {
  const r = await sql<KeptRow>`
    select ${keptColumns(roomId)}
    from pdus p
    where p.event_id > ${afterId}
      and (p.event_id in (select event_id from rp_keep)
           or (p.room_id = ${roomId} and p.redacted_by in (select event_id from rp_purge)))
    order by p.event_id
    limit ${limit}`.execute(db);
  return r.rows;
}

/** Replaces the stored JSON of events (their pruned content). */
export async function replaceJson(
  db: Executor,
  rows: ReadonlyArray<{ id: string; json: JsonObject }>,
): Promise<void> {
  if (rows.length === 0) return;
  await sql`
    update pdus p set json = (x->'json')
    from jsonb_array_elements(${JSON.stringify(rows)}::jsonb) x
    where p.event_id = x->>'id'`.execute(db);
}

/**
 * Old kept events leave the timeline and become outliers (held for auth and state only), but the
 * forward extremities, which new events build on and so need their state.
 */
export async function demoteKept(db: Executor, roomId: string): Promise<void> {
  await sql`
    update pdus set stream_ordering = null, state_group_before = null, state_group_after = null,
                    room_state_group = null, outlier = true
    where event_id in (select event_id from rp_keep)
      and event_id not in (select event_id from room_forward_extremities where room_id = ${roomId})`.execute(
    db,
  );
  await sql`update pdus set redacted_by = null where room_id = ${roomId}
            and redacted_by in (select event_id from rp_purge)`.execute(db);
}

/** Deletes the purged events and every row that points at them; returns rows deleted per table. */
export async function deletePurged(db: Executor, roomId: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const run = async (table: string, q: ReturnType<typeof sql>) => {
    const r = await q.execute(db);
    out[table] = (out[table] ?? 0) + Number(r.numAffectedRows ?? 0);
  };
  await run(
    'receipts',
    sql`delete from receipts where room_id = ${roomId} and event_id in (select event_id from rp_purge)`,
  );
  await run(
    'event_txns',
    sql`delete from event_txns where room_id = ${roomId} and event_id in (select event_id from rp_purge)`,
  );
  await run(
    'account_data',
    sql`delete from account_data where room_id = ${roomId} and type = 'm.fully_read'
        and content->>'event_id' in (select event_id from rp_purge)`,
  );
  await run(
    'event_edges',
    sql`delete from event_edges where event_id in (select event_id from rp_purge)
        or (room_id = ${roomId} and prev_event_id in (select event_id from rp_purge))`,
  );
  await run(
    'event_auth_edges',
    sql`delete from event_auth_edges where event_id in (select event_id from rp_purge)
        or auth_event_id in (select event_id from rp_purge)`,
  );
  await run(
    'event_relations',
    sql`delete from event_relations where event_id in (select event_id from rp_purge)
        or (room_id = ${roomId} and parent_id in (select event_id from rp_purge))`,
  );
  // The search index of purged events, and of old kept ones (their content is pruned).
  await run(
    'event_search',
    sql`delete from event_search where room_id = ${roomId}
        and (event_id in (select event_id from rp_purge) or event_id in (select event_id from rp_keep))`,
  );
  // Notifications and pushes waiting for delivery that point at purged events.
  await run(
    'push_notifications',
    sql`delete from push_notifications where room_id = ${roomId} and event_id in (select event_id from rp_purge)`,
  );
  await run(
    'push_queue',
    sql`delete from push_queue where room_id = ${roomId} and event_id in (select event_id from rp_purge)`,
  );
  await run('pdus', sql`delete from pdus where event_id in (select event_id from rp_purge)`);
  // Backward extremities (prev events not held) that only purged history pointed at.
  await run(
    'room_backward_extremities',
    sql`delete from room_backward_extremities b where b.room_id = ${roomId}
        and not exists (select 1 from event_edges e where e.prev_event_id = b.event_id and e.room_id = ${roomId})`,
  );
  await run(
    'state_group_entries',
    sql`delete from state_group_entries where group_id in (
          select id from state_groups where room_id = ${roomId} and id not in (select id from rp_groups))`,
  );
  await run(
    'state_groups',
    sql`delete from state_groups where room_id = ${roomId} and id not in (select id from rp_groups)`,
  );
  return out;
}

/** Every table that holds a room's data, deleted whole (delete-room); returns rows per table. */
export async function deleteRoomData(db: Executor, roomId: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const run = async (table: string, q: ReturnType<typeof sql>) => {
    const r = await q.execute(db);
    out[table] = Number(r.numAffectedRows ?? 0);
  };
  await run(
    'event_auth_edges',
    sql`delete from event_auth_edges where event_id in (select event_id from pdus where room_id = ${roomId})`,
  );
  await run('event_edges', sql`delete from event_edges where room_id = ${roomId}`);
  await run('receipts', sql`delete from receipts where room_id = ${roomId}`);
  await run('event_search', sql`delete from event_search where room_id = ${roomId}`);
  await run('push_notifications', sql`delete from push_notifications where room_id = ${roomId}`);
  await run('push_queue', sql`delete from push_queue where room_id = ${roomId}`);
  await run('event_txns', sql`delete from event_txns where room_id = ${roomId}`);
  await run('account_data', sql`delete from account_data where room_id = ${roomId}`);
  await run('room_aliases', sql`delete from room_aliases where room_id = ${roomId}`);
  await run('current_state', sql`delete from current_state where room_id = ${roomId}`);
  await run('memberships', sql`delete from memberships where room_id = ${roomId}`);
  await run('room_forward_extremities', sql`delete from room_forward_extremities where room_id = ${roomId}`);
  await run(
    'room_backward_extremities',
    sql`delete from room_backward_extremities where room_id = ${roomId}`,
  );
  await run(
    'federation_destination_rooms',
    sql`delete from federation_destination_rooms where room_id = ${roomId}`,
  );
  await run('event_relations', sql`delete from event_relations where room_id = ${roomId}`);
  await run('room_expiries', sql`delete from room_expiries where room_id = ${roomId}`);
  await run('room_stripped_state', sql`delete from room_stripped_state where room_id = ${roomId}`);
  // A notices room that is gone is made again at the next notice.
  await run('server_notice_rooms', sql`delete from server_notice_rooms where room_id = ${roomId}`);
  await run('detection_notice_rooms', sql`delete from detection_notice_rooms where room_id = ${roomId}`);
  await run('pdus', sql`delete from pdus where room_id = ${roomId}`);
  await run(
    'state_group_entries',
    sql`delete from state_group_entries where group_id in (select id from state_groups where room_id = ${roomId})`,
  );
  await run('state_groups', sql`delete from state_groups where room_id = ${roomId}`);
  await run('rooms', sql`delete from rooms where room_id = ${roomId}`);
  return out;
}

/**
 * Whether the room has events older than `beforeTs` still in its timeline, or rejected or
 * soft-failed ones (what the job would purge); kept old events are outliers by then.
 */
export async function hasOldEvents(db: Executor, roomId: string, beforeTs: number): Promise<boolean> {
  const r = await sql<{ n: number }>`
    select 1 as n from pdus p where p.room_id = ${roomId} and ${AGE} < ${beforeTs}
      and (p.stream_ordering is not null or p.rejected_reason is not null or p.soft_failed)
      and not exists (select 1 from room_forward_extremities f where f.room_id = p.room_id and f.event_id = p.event_id)
    limit 1`.execute(db);
  return r.rows.length > 0;
}

/**
 * The room's forward extremities older than `beforeTs`: a purge keeps them (new events point at
 * them) with their content pruned, so one that was still young at the last purge needs a run
 * once it is old. hasOldEvents leaves them out, for they stay old after their pruning.
 */
export async function oldForwardExtremities(
  db: Executor,
  roomId: string,
  beforeTs: number,
): Promise<KeptRow[]> {
  const r = await sql<KeptRow>`
    select ${keptColumns(roomId)}
    from room_forward_extremities e join pdus p on p.event_id = e.event_id
    where e.room_id = ${roomId} and ${AGE} < ${beforeTs}`.execute(db);
  return r.rows;
}

/** The tables a purge writes, for VACUUM. */
export const PURGED_TABLES = [
  'pdus',
  'event_edges',
  'event_auth_edges',
  'event_txns',
  'receipts',
  'account_data',
  'room_backward_extremities',
  'state_groups',
  'state_group_entries',
  'event_relations',
  'media_references',
  'event_search',
  'push_notifications',
  'push_queue',
] as const;

export const ROOM_TABLES = [
  ...PURGED_TABLES,
  'room_aliases',
  'current_state',
  'memberships',
  'room_forward_extremities',
  'federation_destination_rooms',
  'room_expiries',
  'room_stripped_state',
  'rooms',
] as const;

/** Plain VACUUM (free space reusable) or VACUUM FULL (tables rewritten); never inside a transaction. */
export async function vacuum(db: Executor, tables: readonly string[], full: boolean): Promise<void> {
  const list = sql.join(tables.map((t) => sql.table(t)));
  if (full) await sql`vacuum full ${list}`.execute(db);
  else await sql`vacuum ${list}`.execute(db);
}
