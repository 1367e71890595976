import { sql } from 'kysely';
import { errors } from '../errors.ts';
import type { Db } from '../storage/connect.ts';
import type { EventRow } from '../storage/database.ts';
import { currentPosition } from '../streams/positions.ts';
import type { Session } from './accounts.service.ts';
import type { RoomReader } from './room-reads.ts';
import { parseStreamToken, type RoomsService } from './rooms.service.ts';

/** Largest page of /messages and /context. */
export const MAX_PAGE = 1000;

export type EventMatcher = (row: EventRow) => boolean;

/** Fetches up to `limit` older events of a room from other servers; resolves with how many it added. */
export type Backfill = (roomId: string, limit: number) => Promise<number>;

/**
 * The positions a /messages request's `from` and `to` tokens name (`from` defaults to an end).
 * Going forward, the page stops at the persisted position when no `to` is given: an `end` token
 * past a position still in flight would skip its event once committed.
 */
export async function pageBounds(
  db: Db,
  opts: { from?: string; to?: string; dir: 'b' | 'f' },
): Promise<{ from: number; to: number | undefined }> {
  const from =
    opts.from !== undefined ? parseStreamToken(opts.from) : opts.dir === 'b' ? await currentPosition(db) : 0;
  if (opts.to !== undefined) return { from, to: parseStreamToken(opts.to) };
  return { from, to: opts.dir === 'f' ? await currentPosition(db) : undefined };
}

/**
 * One page of a room's timeline from `cursor` (exclusive going forward, inclusive going back),
 * bounded by `to`, in the direction's order: what /messages pages through.
 */
export function timelinePage(
  db: Db,
  roomId: string,
  page: { cursor: number; dir: 'b' | 'f'; to: number | undefined; limit: number },
): Promise<EventRow[]> {
  let q = db.selectFrom('events').selectAll().where('room_id', '=', roomId);
  if (page.dir === 'b') {
    q = q.where('stream_ordering', '<=', page.cursor).orderBy('stream_ordering', 'desc');
    if (page.to !== undefined) q = q.where('stream_ordering', '>', page.to);
  } else {
    q = q.where('stream_ordering', '>', page.cursor).orderBy('stream_ordering', 'asc');
    if (page.to !== undefined) q = q.where('stream_ordering', '<=', page.to);
  }
  return q.limit(page.limit).execute();
}

/**
 * A room's timeline events from the time `ts` on (`f`: at or after it, oldest first) or back
 * (`b`: at or before it, newest first), after `cursor` in that order; ties by position.
 */
export function eventsByTime(
  db: Db,
  roomId: string,
  q: { ts: number; dir: 'b' | 'f'; cursor?: { ts: number; position: number }; limit: number },
): Promise<EventRow[]> {
  let query = db.selectFrom('events').selectAll().where('room_id', '=', roomId);
  if (q.dir === 'f') {
    query = query.where('origin_server_ts', '>=', q.ts);
    if (q.cursor)
      query = query.where(
        sql<boolean>`(origin_server_ts, stream_ordering) > (${q.cursor.ts}, ${q.cursor.position})`,
      );
    query = query.orderBy('origin_server_ts', 'asc').orderBy('stream_ordering', 'asc');
  } else {
    query = query.where('origin_server_ts', '<=', q.ts);
    if (q.cursor)
      query = query.where(
        sql<boolean>`(origin_server_ts, stream_ordering) < (${q.cursor.ts}, ${q.cursor.position})`,
      );
    query = query.orderBy('origin_server_ts', 'desc').orderBy('stream_ordering', 'desc');
  }
  return query.limit(q.limit).execute();
}

/** Events GET /timestamp_to_event looks through at most for one the caller may see. */
const TIMESTAMP_SCAN = 1000;

/**
 * Room history: /messages and /context. Pagination tokens are stream positions (`s<n>`), stable
 * across restarts and processes: `s<n>` means "between the event at position n and the next".
 */
export class HistoryService {
  private backfill: Backfill | undefined;

  constructor(
    private readonly db: Db,
    private readonly rooms: RoomsService,
    private readonly reader: RoomReader,
    private readonly now: () => number = Date.now,
  ) {}

  /** Where paging back past the oldest event held asks other servers for more (federation). */
  setBackfill(backfill: Backfill): void {
    this.backfill = backfill;
  }

  /** GET /rooms/{roomId}/messages */
  async messages(
    session: Session,
    roomId: string,
    opts: {
      from?: string;
      to?: string;
      dir: 'b' | 'f';
      limit?: number;
      matches?: EventMatcher;
      lazyLoadMembers?: boolean;
    },
  ) {
    await this.rooms.readableStateGroup(session.userId, roomId);
    const limit = Math.min(Math.max(opts.limit ?? 10, 0), MAX_PAGE);
    const { from, to } = await pageBounds(this.db, opts);

    const chunk: EventRow[] = [];
    let cursor = from;
    let reachedEnd = false;
    // Going back past the oldest event held, other servers are asked once per request.
    let mayBackfill = opts.dir === 'b' && this.backfill !== undefined && to === undefined;
    let backfilled = false;
    // Read in batches until `limit` visible events are found or the room's history ends.
    while (chunk.length < limit) {
      const batchSize = Math.max(limit * 2, 20);
      const rows = await timelinePage(this.db, roomId, { cursor, dir: opts.dir, to, limit: batchSize });
      const visible = new Set(await this.reader.filterVisible(this.db, session.userId, rows));
      let consumed = 0;
      for (const row of rows) {
        consumed++;
        cursor = opts.dir === 'b' ? row.stream_ordering - 1 : row.stream_ordering;
        if (visible.has(row) && (!opts.matches || opts.matches(row))) chunk.push(row);
        if (chunk.length >= limit) break;
      }
      if (rows.length < batchSize && consumed === rows.length) {
        if (mayBackfill) {
          mayBackfill = false;
          if ((await this.backfill!(roomId, Math.max(limit - chunk.length, 10))) > 0) {
            backfilled = true;
            continue;
          }
        }
        // After a backfill there may be more to fetch: the next page asks again, and only a
        // page that fetches nothing ends the history.
        reachedEnd = !backfilled;
        break;
      }
    }
    const events = await this.reader.toClientMany(this.db, chunk, {
      now: this.now(),
      viewer: { userId: session.userId, deviceId: session.deviceId },
    });
    // With lazy_load_members, `state` carries the member events of the chunk's senders (the
    // spec's example of the state "relevant to showing the chunk"), as Synapse sends them.
    const state = opts.lazyLoadMembers ? await this.sendersMembers(session, chunk) : undefined;
    // `end` is left out only when the page is empty and nothing lies beyond it. A page that found
    // events carries it even when the history ended with them (as Synapse does): the next
    // request then answers an empty chunk without `end`, and a filtered page (contains_url)
    // always tells the client where it stopped (Complement's TestRoomImageRoundtrip).
    const more = !reachedEnd || events.length > 0;
    return {
      chunk: events,
      start: `s${from}`,
      ...(more ? { end: `s${cursor}` } : {}),
      ...(state && state.length > 0 ? { state } : {}),
    };
  }

  /**
   * The member events of the senders of `rows`, each as the state after the first of the rows
   * shows it (the state the page starts from); a sender who is not a member there (a join
   * later in a forward page) gets the member event in force at their own first event.
   */
  private async sendersMembers(session: Session, rows: EventRow[]) {
    const first = rows[0];
    if (!first) return [];
    const firstBySender = new Map<string, EventRow>();
    for (const row of rows) if (!firstBySender.has(row.sender)) firstBySender.set(row.sender, row);
    const picked = new Map<string, EventRow>();
    for (const [sender, own] of firstBySender) {
      const member =
        (await this.reader.stateEventAt(this.db, first.state_group_after, 'm.room.member', sender)) ??
        (await this.reader.stateEventAt(this.db, own.state_group_after, 'm.room.member', sender));
      if (member) picked.set(member.event_id, member);
    }
    return this.reader.toClientMany(this.db, [...picked.values()], {
      now: this.now(),
      viewer: { userId: session.userId, deviceId: session.deviceId },
    });
  }

  /**
   * GET /v1/rooms/{roomId}/timestamp_to_event: the event closest to `ts` in the direction that
   * the caller may see (history visibility), by `origin_server_ts`.
   */
  async timestampToEvent(session: Session, roomId: string, ts: number, dir: 'b' | 'f') {
    await this.rooms.readableStateGroup(session.userId, roomId);
    let cursor: { ts: number; position: number } | undefined;
    for (let scanned = 0; scanned < TIMESTAMP_SCAN; ) {
      const rows = await eventsByTime(this.db, roomId, { ts, dir, ...(cursor ? { cursor } : {}), limit: 50 });
      if (rows.length === 0) break;
      scanned += rows.length;
      const [first] = await this.reader.filterVisible(this.db, session.userId, rows);
      if (first) return { event_id: first.event_id, origin_server_ts: first.origin_server_ts };
      const last = rows[rows.length - 1]!;
      cursor = { ts: last.origin_server_ts, position: last.stream_ordering };
      if (rows.length < 50) break;
    }
    throw errors.notFound(`No event found ${dir === 'f' ? 'after' : 'before'} that time that you may see`);
  }

  private async positionsOf(eventIds: string[]): Promise<number[]> {
    const rows = await this.reader.eventRows(this.db, eventIds, true);
    return [...rows.values()].map((r) => r.stream_ordering);
  }

  /** GET /rooms/{roomId}/context/{eventId} */
  async context(
    session: Session,
    roomId: string,
    eventId: string,
    limit = 10,
    matches?: EventMatcher,
    lazyLoadMembers = false,
  ) {
    const target = await this.rooms.visibleEvent(session.userId, roomId, eventId);
    const half = Math.min(Math.max(limit, 0), MAX_PAGE);
    const before = await this.messages(session, roomId, {
      from: `s${target.stream_ordering - 1}`,
      dir: 'b',
      limit: Math.floor(half / 2),
      ...(matches ? { matches } : {}),
    });
    const after = await this.messages(session, roomId, {
      from: `s${target.stream_ordering}`,
      dir: 'f',
      limit: Math.ceil(half / 2),
      ...(matches ? { matches } : {}),
    });
    const afterPositions = await this.positionsOf(after.chunk.map((e) => e.event_id));
    // With lazy_load_members, only the member events of the senders of what is returned.
    const senders = new Set(
      [target.sender, ...before.chunk.map((e) => e.sender), ...after.chunk.map((e) => e.sender)].map(String),
    );
    const state = await this.reader.stateEventsAt(this.db, target.state_group_after, (key) => {
      if (!lazyLoadMembers) return true;
      const [type, stateKey] = key.split('\u0000') as [string, string];
      return type !== 'm.room.member' || senders.has(stateKey);
    });
    const viewer = { userId: session.userId, deviceId: session.deviceId };
    const [event] = await this.reader.toClientMany(this.db, [target], { now: this.now(), viewer });
    if (!event) throw errors.notFound('Event not found');
    return {
      event,
      events_before: before.chunk,
      events_after: after.chunk,
      // When history runs out in a direction, the token there points past its last event, so
      // paginating from it returns nothing again rather than repeating events.
      start: before.end ?? 's0',
      end: after.end ?? `s${Math.max(target.stream_ordering, ...afterPositions)}`,
      state: await this.reader.toClientMany(this.db, state, { now: this.now() }),
    };
  }
}
