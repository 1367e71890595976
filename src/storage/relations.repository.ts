import { sql } from 'kysely';
import type { RoomEvent } from '../protocol/event.ts';
import type { Executor } from './accounts.repository.ts';

/** The `m.relates_to` of an event's content, when it names a relation type and an event. */
export function relationOf(
  content: unknown,
): { relType: string; parentId: string; key: string | null } | undefined {
  if (typeof content !== 'object' || content === null) return undefined;
  const rel = (content as Record<string, unknown>)['m.relates_to'];
  if (typeof rel !== 'object' || rel === null || Array.isArray(rel)) return undefined;
  const { rel_type: relType, event_id: parentId, key } = rel as Record<string, unknown>;
  if (typeof relType !== 'string' || relType === '' || relType.length > 255) return undefined;
  if (typeof parentId !== 'string' || !parentId.startsWith('$') || parentId.length > 255) return undefined;
  return { relType, parentId, key: typeof key === 'string' && key.length <= 255 ? key : null };
}

/**
 * Called by the event pipeline when a timeline event is persisted, in its transaction: records
 * the event's relation, if it has one (an edge table for /relations, /threads and the
 * aggregations in `unsigned`).
 */
export async function recordRelation(
  trx: Executor,
  roomId: string,
  event: RoomEvent,
  position: number,
): Promise<void> {
  const rel = relationOf(event.content);
  if (!rel || rel.parentId === event.event_id) return;
  await trx
    .insertInto('event_relations')
    .values({
      event_id: event.event_id,
      room_id: roomId,
      parent_id: rel.parentId,
      rel_type: rel.relType,
      type: event.type,
      sender: event.sender,
      key: rel.key,
      stream_ordering: position,
    })
    .onConflict((oc) => oc.column('event_id').doNothing())
    .execute();
}

export interface RelationSummary {
  parent_id: string;
  rel_type: string;
  count: number;
  latest: number;
  mine: boolean;
}

/** Per parent and relation type: how many unredacted relations, the latest position, and whether the user sent one. */
export async function relationSummaries(
  db: Executor,
  parentIds: readonly string[],
  relTypes: readonly string[],
  userId: string,
): Promise<RelationSummary[]> {
  if (parentIds.length === 0) return [];
  const rows = await sql<RelationSummary>`
    select r.parent_id, r.rel_type, count(*) as count, max(r.stream_ordering) as latest,
           bool_or(r.sender = ${userId}) as mine
      from event_relations r join events e on e.event_id = r.event_id
      where r.parent_id in (${sql.join(parentIds)}) and r.rel_type in (${sql.join(relTypes)})
        and e.redacted_by is null
      group by r.parent_id, r.rel_type
  `.execute(db);
  return rows.rows.map((r) => ({
    ...r,
    count: Number(r.count),
    latest: Number(r.latest),
    mine: Boolean(r.mine),
  }));
}

/** Unredacted relations of the given type to the parents, newest (by origin_server_ts) first. */
export async function relationsOfType(
  db: Executor,
  parentIds: readonly string[],
  relType: string,
  limit: number,
): Promise<
  Array<{ event_id: string; parent_id: string; sender: string; type: string; state_key: string | null }>
> {
  if (parentIds.length === 0) return [];
  return db
    .selectFrom('event_relations as r')
    .innerJoin('events as e', 'e.event_id', 'r.event_id')
    .select(['r.event_id', 'r.parent_id', 'r.sender', 'r.type', 'e.state_key'])
    .where('r.parent_id', 'in', parentIds)
    .where('r.rel_type', '=', relType)
    .where('e.redacted_by', 'is', null)
    .orderBy('e.origin_server_ts', 'desc')
    .orderBy('r.event_id', 'desc')
    .limit(limit)
    .execute();
}

/** Event IDs of the events at the given positions. */
export async function eventIdsAt(db: Executor, positions: readonly number[]): Promise<Map<number, string>> {
  if (positions.length === 0) return new Map();
  const rows = await db
    .selectFrom('events')
    .select(['event_id', 'stream_ordering'])
    .where('stream_ordering', 'in', positions)
    .execute();
  return new Map(rows.map((r) => [r.stream_ordering, r.event_id]));
}

/** IDs of the events relating to any of the parents (any type), at most `limit`. */
export async function childIds(db: Executor, roomId: string, parentIds: readonly string[], limit: number) {
  if (parentIds.length === 0) return [];
  const rows = await db
    .selectFrom('event_relations')
    .select('event_id')
    .where('room_id', '=', roomId)
    .where('parent_id', 'in', parentIds)
    .limit(limit)
    .execute();
  return rows.map((r) => r.event_id);
}

/**
 * A page of the events relating to the parents, in position order (`dir`), with positions in
 * (lower, upper], optionally of one relation type and event type.
 */
export async function relationPage(
  db: Executor,
  q: {
    roomId: string;
    parentIds: readonly string[];
    relType?: string;
    eventType?: string;
    lower: number;
    upper: number;
    dir: 'b' | 'f';
    limit: number;
  },
) {
  let query = db
    .selectFrom('event_relations as r')
    .innerJoin('events as e', 'e.event_id', 'r.event_id')
    .selectAll('e')
    .where('r.room_id', '=', q.roomId)
    .where('r.parent_id', 'in', q.parentIds)
    .where('r.stream_ordering', '>', q.lower)
    .where('r.stream_ordering', '<=', q.upper);
  if (q.relType !== undefined) query = query.where('r.rel_type', '=', q.relType);
  if (q.eventType !== undefined) query = query.where('r.type', '=', q.eventType);
  return query
    .orderBy('r.stream_ordering', q.dir === 'b' ? 'desc' : 'asc')
    .limit(q.limit)
    .execute();
}

/**
 * Thread roots of the room by their latest reply, newest first, whose latest reply lies at or
 * below `upper`; with `participant`, only threads the user started or replied to.
 */
export async function threadPage(
  db: Executor,
  q: { roomId: string; upper: number; limit: number; participant?: string },
): Promise<Array<{ parent_id: string; latest: number }>> {
  const participated =
    q.participant === undefined
      ? sql``
      : sql`and (exists (select 1 from event_relations r2 where r2.parent_id = r.parent_id
                           and r2.rel_type = 'm.thread' and r2.sender = ${q.participant})
                 or exists (select 1 from events root where root.event_id = r.parent_id
                           and root.sender = ${q.participant}))`;
  const rows = await sql<{ parent_id: string; latest: number }>`
    select r.parent_id, max(r.stream_ordering) as latest
      from event_relations r join events e on e.event_id = r.event_id
      where r.room_id = ${q.roomId} and r.rel_type = 'm.thread' and e.redacted_by is null ${participated}
      group by r.parent_id
      having max(r.stream_ordering) <= ${q.upper}
      order by latest desc
      limit ${q.limit}
  `.execute(db);
  return rows.rows.map((r) => ({ parent_id: r.parent_id, latest: Number(r.latest) }));
}
