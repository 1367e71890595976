import { errors } from '../errors.ts';
import type { Db } from '../storage/connect.ts';
import type { EventRow } from '../storage/database.ts';
import * as store from '../storage/search.repository.ts';
import type { Session } from './accounts.service.ts';
import { eventMatchesFilter, type RoomEventFilter } from './filter-matching.ts';
import type { HistoryService } from './history.service.ts';
import { decodeOpaqueToken, encodeOpaqueToken } from './opaque-token.ts';
import type { ClientEvent, RoomReader } from './room-reads.ts';
import type { RoomsService } from './rooms.service.ts';

/** Results per page by default, and at most (`filter.limit`). */
export const DEFAULT_SEARCH_LIMIT = 10;
export const MAX_SEARCH_LIMIT = 100;
/** Context events at most on each side of a result. */
export const MAX_CONTEXT = 100;
/** Index rows one request looks through at most (to fill its page, then to count). */
const MAX_SCAN = 2000;
const COUNT_SCAN = 1000;

export type GroupKey = 'room_id' | 'sender';

export interface RoomEventsCriteria {
  search_term: string;
  keys?: store.SearchKey[];
  filter?: RoomEventFilter;
  order_by?: 'recent' | 'rank';
  event_context?: { before_limit?: number; after_limit?: number; include_profile?: boolean };
  include_state?: boolean;
  groupings?: { group_by?: Array<{ key: GroupKey }> };
}

/**
 * A page token: where the previous page stopped in the order, the count the first page found,
 * and for a group's token the group it pages through. Opaque to clients (base64url JSON).
 */
interface PageToken {
  order: 'rank' | 'recent';
  position: number;
  rank?: string;
  count: number;
  group?: { key: GroupKey; value: string };
}

const encodeToken = (t: PageToken) => encodeOpaqueToken(t);

function decodeToken(raw: string): PageToken {
  const message = 'Invalid next_batch token';
  const bad = () => errors.invalidParam(message);
  const { order, position, rank, count, group } = decodeOpaqueToken(raw, message);
  if (order !== 'rank' && order !== 'recent') throw bad();
  if (!Number.isSafeInteger(position) || !Number.isSafeInteger(count) || (count as number) < 0) throw bad();
  // A rank as PostgreSQL prints a `real`: a plain decimal, maybe with an exponent, in range.
  if (
    order === 'rank' &&
    (typeof rank !== 'string' ||
      !/^\d{1,20}(\.\d{1,20})?(e[+-]?\d{1,2})?$/.test(rank) ||
      !(Number(rank) === 0 || (Number(rank) >= 1e-37 && Number(rank) < 1e30)))
  )
    throw bad();
  const out: PageToken = { order, position: position as number, count: count as number };
  if (order === 'rank') out.rank = rank as string;
  if (group !== undefined) {
    const g = group as Record<string, unknown>;
    if (
      typeof g !== 'object' ||
      g === null ||
      (g.key !== 'room_id' && g.key !== 'sender') ||
      typeof g.value !== 'string' ||
      g.value.length > 255
    )
      throw bad();
    out.group = { key: g.key, value: g.value };
  }
  return out;
}

interface Found {
  candidate: store.SearchCandidate;
  row: EventRow;
}

/**
 * Server-side search (client-server API: Server Side Search; spec/search.md): the `room_events`
 * category over the full-text index the event pipeline writes, in the rooms the user is or was
 * in, unencrypted, keeping only the events the user may see under history visibility (the rule
 * /messages applies: RoomReader.filterVisible).
 */
export class SearchService {
  constructor(
    private readonly db: Db,
    private readonly rooms: RoomsService,
    private readonly reader: RoomReader,
    private readonly history: HistoryService,
    private readonly now: () => number = Date.now,
  ) {}

  /** POST /search */
  async search(
    session: Session,
    body: { search_categories: { room_events?: RoomEventsCriteria } },
    nextBatch?: string,
  ) {
    const criteria = body.search_categories.room_events;
    if (!criteria) {
      if (nextBatch !== undefined)
        throw errors.invalidParam('next_batch given, but no category to page through');
      return { search_categories: {} };
    }
    return { search_categories: { room_events: await this.roomEvents(session, criteria, nextBatch) } };
  }

  private async roomEvents(session: Session, c: RoomEventsCriteria, nextBatch: string | undefined) {
    const order = c.order_by ?? 'rank';
    const token = nextBatch !== undefined ? decodeToken(nextBatch) : undefined;
    if (token && token.order !== order) throw errors.invalidParam('next_batch belongs to another order_by');
    const filter = c.filter ?? {};
    const limit = Math.min(filter.limit ?? DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT);
    const keys = c.keys && c.keys.length > 0 ? [...new Set(c.keys)] : [...store.SEARCH_KEYS];
    const groupBy = [...new Set((c.groupings?.group_by ?? []).map((g) => g.key))];

    let rooms = await store.searchableRooms(this.db, session.userId);
    if (filter.rooms) rooms = rooms.filter((r) => filter.rooms!.includes(r));
    if (filter.not_rooms) rooms = rooms.filter((r) => !filter.not_rooms!.includes(r));
    let senders = filter.senders;
    if (token?.group?.key === 'room_id') rooms = rooms.filter((r) => r === token.group!.value);
    if (token?.group?.key === 'sender')
      senders = (senders ?? [token.group.value]).filter((s) => s === token.group!.value);

    const empty = { results: [], count: 0, highlights: [] as string[] };
    if (rooms.length === 0 || c.search_term.trim() === '') return empty;
    if (!(await store.termHasWords(this.db, c.search_term))) return empty;

    const query = (after: store.CandidateQuery['after'], batch: number) =>
      store.searchCandidates(this.db, {
        term: c.search_term,
        rooms,
        keys,
        ...(senders ? { senders } : {}),
        ...(filter.not_senders ? { notSenders: filter.not_senders } : {}),
        order,
        ...(after ? { after } : {}),
        limit: batch,
      });
    const afterOf = (x: store.SearchCandidate): NonNullable<store.CandidateQuery['after']> =>
      order === 'rank' ? { rank: x.rank_text, position: x.stream_ordering } : { position: x.stream_ordering };

    // Fill the page, reading the index in batches from where the last page stopped.
    let after: store.CandidateQuery['after'] = token
      ? order === 'rank'
        ? { rank: token.rank!, position: token.position }
        : { position: token.position }
      : undefined;
    const found: Found[] = [];
    let last: store.SearchCandidate | undefined;
    let exhausted = false;
    let scanned = 0;
    const batchSize = Math.max(limit * 2, 20);
    while (found.length < limit && scanned < MAX_SCAN) {
      const batch = await query(after, batchSize);
      const kept = await this.visible(session.userId, batch, filter);
      let consumed = 0;
      for (const candidate of batch) {
        consumed++;
        last = candidate;
        const row = kept.get(candidate.event_id);
        if (row) found.push({ candidate, row });
        if (found.length >= limit) break;
      }
      scanned += consumed;
      if (last) after = afterOf(last);
      if (batch.length < batchSize && consumed === batch.length) {
        exhausted = true;
        break;
      }
    }
    // Whether a visible match follows the page (bounded look-ahead); the first page also counts
    // them, and later pages carry that count in their token.
    let ahead = 0;
    if (!exhausted) {
      let cursor = after;
      let seen = 0;
      while (seen < COUNT_SCAN) {
        const batch = await query(cursor, 200);
        if (batch.length === 0) break;
        seen += batch.length;
        ahead += (await this.visible(session.userId, batch, filter)).size;
        cursor = afterOf(batch[batch.length - 1]!);
        if ((token && ahead > 0) || batch.length < 200) break;
      }
    }
    // A full page also gets a token, more or not (as Synapse, and Complement's TestSearch expect):
    // the page after it is then empty and has none. Absent, it means nothing follows.
    const more = limit > 0 && (ahead > 0 || found.length >= limit);
    const count = token?.count ?? found.length + ahead;

    const viewer = { userId: session.userId, deviceId: session.deviceId };
    const events = await this.reader.toClientMany(
      this.db,
      found.map((f) => f.row),
      { now: this.now(), viewer },
    );
    const context = c.event_context;
    const results: Array<Record<string, unknown>> = [];
    for (const [i, f] of found.entries()) {
      const result: Record<string, unknown> = { rank: f.candidate.rank, result: events[i] };
      if (context) result.context = await this.contextOf(session, f.row, events[i]!, context);
      results.push(result);
    }

    const out: Record<string, unknown> = {
      results,
      count,
      highlights: await store.matchedWords(
        this.db,
        c.search_term,
        found.flatMap((f) => {
          const t = store.searchableText(f.row.json as never);
          return t ? [t.text] : [];
        }),
      ),
    };
    const nextToken = (group?: PageToken['group']) =>
      last
        ? encodeToken({
            order,
            position: last.stream_ordering,
            ...(order === 'rank' ? { rank: last.rank_text } : {}),
            count,
            ...(group ? { group } : token?.group ? { group: token.group } : {}),
          })
        : undefined;
    if (more) out.next_batch = nextToken();
    if (groupBy.length > 0) {
      const groups: Record<
        string,
        Record<string, { results: string[]; order: number; next_batch?: string }>
      > = {};
      for (const key of groupBy) {
        const byValue: Record<string, { results: string[]; order: number; next_batch?: string }> = {};
        for (const f of found) {
          const value = key === 'room_id' ? f.row.room_id : f.row.sender;
          let g = byValue[value];
          if (!g) {
            g = { results: [], order: Object.keys(byValue).length + 1 };
            if (more) g.next_batch = nextToken({ key, value })!;
            byValue[value] = g;
          }
          g.results.push(f.row.event_id);
        }
        groups[key] = byValue;
      }
      out.groups = groups;
    }
    if (c.include_state) {
      const state: Record<string, ClientEvent[]> = {};
      for (const roomId of new Set(found.map((f) => f.row.room_id))) {
        const group = await this.rooms.readableStateGroup(session.userId, roomId);
        const rows = await this.reader.stateEventsAt(this.db, group);
        state[roomId] = await this.reader.toClientMany(this.db, rows, { now: this.now() });
      }
      out.state = state;
    }
    return out;
  }

  /** The candidates' events that the user may see and that pass the filter, by event ID. */
  private async visible(
    userId: string,
    batch: readonly store.SearchCandidate[],
    filter: RoomEventFilter,
  ): Promise<Map<string, EventRow>> {
    const rows = await this.reader.eventRows(
      this.db,
      batch.map((b) => b.event_id),
    );
    const present = batch
      .map((b) => rows.get(b.event_id))
      .filter((r): r is EventRow => r !== undefined && r.redacted_by === null);
    const seen = await this.reader.filterVisible(this.db, userId, present);
    const out = new Map<string, EventRow>();
    for (const row of seen) {
      const ok = eventMatchesFilter(filter, {
        type: row.type,
        sender: row.sender,
        room_id: row.room_id,
        content: row.json.content,
      });
      if (ok) out.set(row.event_id, row);
    }
    return out;
  }

  /** The events around a result, as /context pages them, and the senders' profiles then. */
  private async contextOf(
    session: Session,
    row: EventRow,
    event: ClientEvent,
    opts: NonNullable<RoomEventsCriteria['event_context']>,
  ) {
    const beforeLimit = Math.min(opts.before_limit ?? 5, MAX_CONTEXT);
    const afterLimit = Math.min(opts.after_limit ?? 5, MAX_CONTEXT);
    const before = await this.history.messages(session, row.room_id, {
      from: `s${row.stream_ordering - 1}`,
      dir: 'b',
      limit: beforeLimit,
    });
    const after = await this.history.messages(session, row.room_id, {
      from: `s${row.stream_ordering}`,
      dir: 'f',
      limit: afterLimit,
    });
    const context: Record<string, unknown> = {
      start: before.end ?? 's0',
      end: after.end ?? `s${row.stream_ordering}`,
      events_before: before.chunk,
      events_after: after.chunk,
    };
    if (opts.include_profile) {
      const senders = new Set([
        event.sender as string,
        ...before.chunk.map((e) => e.sender as string),
        ...after.chunk.map((e) => e.sender as string),
      ]);
      const profiles: Record<string, { displayname?: string; avatar_url?: string }> = {};
      for (const sender of senders) {
        const member = await this.reader.stateEventAt(
          this.db,
          row.state_group_after,
          'm.room.member',
          sender,
        );
        const content = (member?.redacted_by === null ? member.json.content : undefined) as
          | Record<string, unknown>
          | undefined;
        const profile: { displayname?: string; avatar_url?: string } = {};
        if (typeof content?.displayname === 'string') profile.displayname = content.displayname;
        if (typeof content?.avatar_url === 'string') profile.avatar_url = content.avatar_url;
        profiles[sender] = profile;
      }
      context.profile_info = profiles;
    }
    return context;
  }
}
