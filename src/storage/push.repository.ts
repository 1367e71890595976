import { sql } from 'kysely';
import type { JsonObject } from '../protocol/json.ts';
import type { Executor } from './accounts.repository.ts';
import type { PusherRow, PushNotificationRow, PushQueueRow } from './database.ts';

// --- push rule changes ------------------------------------------------------------------------

/** The user's stored rule changes, locked until the transaction ends (a row is made if none). */
export async function lockRuleChanges(db: Executor, userId: string, now: number): Promise<JsonObject> {
  await db
    .insertInto('push_rule_changes')
    .values({ user_id: userId, rules: '{}', updated_ts: now })
    .onConflict((c) => c.column('user_id').doNothing())
    .execute();
  const row = await db
    .selectFrom('push_rule_changes')
    .select('rules')
    .where('user_id', '=', userId)
    .forUpdate()
    .executeTakeFirstOrThrow();
  return row.rules;
}

export async function saveRuleChanges(db: Executor, userId: string, rules: JsonObject, now: number) {
  await db
    .updateTable('push_rule_changes')
    .set({ rules: JSON.stringify(rules), updated_ts: now })
    .where('user_id', '=', userId)
    .execute();
}

/** The stored rule changes of each of these users who has any. */
export async function ruleChangesOf(db: Executor, userIds: string[]): Promise<Map<string, JsonObject>> {
  if (userIds.length === 0) return new Map();
  const rows = await db
    .selectFrom('push_rule_changes')
    .select(['user_id', 'rules'])
    .where('user_id', 'in', userIds)
    .execute();
  return new Map(rows.map((r) => [r.user_id, r.rules]));
}

// --- pushers ----------------------------------------------------------------------------------

export function pushersOf(db: Executor, userId: string): Promise<PusherRow[]> {
  return db.selectFrom('pushers').selectAll().where('user_id', '=', userId).orderBy('pushkey_ts').execute();
}

/** The pushers of any of these users. */
export function pushersOfUsers(db: Executor, userIds: string[]): Promise<PusherRow[]> {
  if (userIds.length === 0) return Promise.resolve([]);
  return db.selectFrom('pushers').selectAll().where('user_id', 'in', userIds).execute();
}

export function findPusher(
  db: Executor,
  userId: string,
  appId: string,
  pushkey: string,
): Promise<PusherRow | undefined> {
  return db
    .selectFrom('pushers')
    .selectAll()
    .where('user_id', '=', userId)
    .where('app_id', '=', appId)
    .where('pushkey', '=', pushkey)
    .executeTakeFirst();
}

export async function upsertPusher(db: Executor, row: PusherRow): Promise<void> {
  const values = { ...row, data: JSON.stringify(row.data) };
  await db
    .insertInto('pushers')
    .values(values)
    .onConflict((c) =>
      c.columns(['user_id', 'app_id', 'pushkey']).doUpdateSet({
        kind: values.kind,
        app_display_name: values.app_display_name,
        device_display_name: values.device_display_name,
        profile_tag: values.profile_tag,
        lang: values.lang,
        data: values.data,
        device_id: values.device_id,
      }),
    )
    .execute();
}

/** Deletes pushers with this app ID and pushkey: of `userId` only, or of everyone but `exceptUserId`. */
export async function deletePushers(
  db: Executor,
  appId: string,
  pushkey: string,
  who: { userId: string } | { exceptUserId: string },
): Promise<number> {
  let q = db.deleteFrom('pushers').where('app_id', '=', appId).where('pushkey', '=', pushkey);
  q = 'userId' in who ? q.where('user_id', '=', who.userId) : q.where('user_id', '<>', who.exceptUserId);
  const r = await q.executeTakeFirst();
  await db
    .deleteFrom('push_queue')
    .where('app_id', '=', appId)
    .where('pushkey', '=', pushkey)
    .where((eb) => ('userId' in who ? eb('user_id', '=', who.userId) : eb('user_id', '<>', who.exceptUserId)))
    .execute();
  return Number(r.numDeletedRows);
}

// --- notifications ----------------------------------------------------------------------------

export async function insertNotifications(
  db: Executor,
  rows: Array<Omit<PushNotificationRow, 'actions'> & { actions: unknown[] }>,
): Promise<void> {
  if (rows.length === 0) return;
  await db
    .insertInto('push_notifications')
    .values(rows.map((r) => ({ ...r, actions: JSON.stringify(r.actions) })))
    .onConflict((c) => c.columns(['user_id', 'event_id']).doNothing())
    .execute();
}

/** The user's notifications below `before` (a stream position), newest first, with the event. */
export async function notificationsOf(
  db: Executor,
  userId: string,
  opts: { before: number | undefined; limit: number; onlyHighlight: boolean },
) {
  let q = db
    .selectFrom('push_notifications as n')
    .innerJoin('events as e', 'e.event_id', 'n.event_id')
    .selectAll('e')
    .select(['n.actions', 'n.ts as notified_ts', 'n.stream_ordering as n_ordering'])
    .select(
      sql<boolean>`exists (select 1 from receipts r join events re on re.event_id = r.event_id
        where r.room_id = n.room_id and r.user_id = n.user_id
          and r.receipt_type in ('m.read', 'm.read.private') and re.stream_ordering >= n.stream_ordering)`.as(
        'read',
      ),
    )
    .where('n.user_id', '=', userId);
  if (opts.before !== undefined) q = q.where('n.stream_ordering', '<', opts.before);
  if (opts.onlyHighlight) q = q.where('n.highlight', '=', true);
  return q.orderBy('n.stream_ordering', 'desc').limit(opts.limit).execute();
}

/** Notifications of the user not yet read (after their latest read receipt in each room). */
export async function unreadNotificationCount(db: Executor, userId: string): Promise<number> {
  const r = await sql<{ n: number }>`
    select count(*) as n from push_notifications p
    where p.user_id = ${userId}
      and p.stream_ordering > coalesce((
        select max(e.stream_ordering) from receipts r join events e on e.event_id = r.event_id
        where r.room_id = p.room_id and r.user_id = p.user_id and r.receipt_type in ('m.read', 'm.read.private')
      ), 0)`.execute(db);
  return Number(r.rows[0]?.n ?? 0);
}

// --- the evaluation position and the delivery queue ---------------------------------------------

export async function progress(db: Executor): Promise<number | undefined> {
  const row = await db
    .selectFrom('push_progress')
    .select('position')
    .where('name', '=', 'main')
    .executeTakeFirst();
  return row === undefined ? undefined : Number(row.position);
}

export async function setProgress(db: Executor, position: number): Promise<void> {
  await db
    .insertInto('push_progress')
    .values({ name: 'main', position })
    .onConflict((c) => c.column('name').doUpdateSet({ position }))
    .execute();
}

export async function enqueue(
  db: Executor,
  rows: Array<
    Pick<PushQueueRow, 'user_id' | 'app_id' | 'pushkey' | 'event_id' | 'room_id'> & {
      tweaks: JsonObject;
    }
  >,
  now: number,
): Promise<void> {
  if (rows.length === 0) return;
  await db
    .insertInto('push_queue')
    .values(rows.map((r) => ({ ...r, tweaks: JSON.stringify(r.tweaks), due_ts: now, created_ts: now })))
    .execute();
}

/**
 * Claims up to `limit` due deliveries: their `due_ts` moves `leaseMs` ahead, so no other process
 * takes them meanwhile (and a process that dies holding them lets them go when the lease ends).
 */
export async function claimDue(db: Executor, now: number, leaseMs: number, limit: number) {
  const r = await sql<PushQueueRow>`
    update push_queue set due_ts = ${now + leaseMs}
    where id in (select id from push_queue where due_ts <= ${now} order by id limit ${limit} for update skip locked)
    returning *`.execute(db);
  return r.rows.map((row) => ({ ...row, id: Number(row.id), attempts: Number(row.attempts) }));
}

export async function deleteQueued(db: Executor, id: number): Promise<void> {
  await db.deleteFrom('push_queue').where('id', '=', id).execute();
}

export async function retryQueued(db: Executor, id: number, attempts: number, dueTs: number): Promise<void> {
  await db.updateTable('push_queue').set({ attempts, due_ts: dueTs }).where('id', '=', id).execute();
}

/** When the next queued delivery is due, if any. */
export async function nextDue(db: Executor): Promise<number | undefined> {
  const r = await db
    .selectFrom('push_queue')
    .select((eb) => eb.fn.min('due_ts').as('due'))
    .executeTakeFirst();
  return r?.due === null || r?.due === undefined ? undefined : Number(r.due);
}
