import { sql } from 'kysely';
import type { RoomEvent } from '../protocol/event.ts';
import type { Executor } from './accounts.repository.ts';

/**
 * The full-text index of server-side search (spec/search.md, migration 0015). Both PostgreSQL
 * and PGlite (PostgreSQL compiled to WebAssembly) have text search, so one set of queries serves
 * both.
 */

/** The text search configuration of the index and of queries: English stemming and stop words. */
const CONFIG = 'english';

export type SearchKey = 'content.body' | 'content.name' | 'content.topic';
export const SEARCH_KEYS: readonly SearchKey[] = ['content.body', 'content.name', 'content.topic'];

/** Text longer than this is cut before indexing (an event is at most 64 KiB anyway). */
const MAX_TEXT = 65_536;

/**
 * The searchable text of an event and the key it is under (client-server API: Server Side
 * Search, `room_events`): `content.body` of `m.room.message`, `content.name` of `m.room.name`,
 * and of `m.room.topic` both `content.topic` and the `text/plain` bodies of `content["m.topic"]`.
 * Undefined for anything else (encrypted events among them).
 */
export function searchableText(
  event: Pick<RoomEvent, 'type' | 'content' | 'state_key'>,
): { key: SearchKey; text: string } | undefined {
  const content = event.content as Record<string, unknown>;
  let key: SearchKey;
  const parts: string[] = [];
  if (event.type === 'm.room.message') {
    key = 'content.body';
    if (typeof content.body === 'string') parts.push(content.body);
  } else if (event.type === 'm.room.name' && event.state_key === '') {
    key = 'content.name';
    if (typeof content.name === 'string') parts.push(content.name);
  } else if (event.type === 'm.room.topic' && event.state_key === '') {
    key = 'content.topic';
    if (typeof content.topic === 'string') parts.push(content.topic);
    const rich = content['m.topic'];
    const blocks = Array.isArray(rich)
      ? rich
      : Array.isArray((rich as { 'm.text'?: unknown })?.['m.text'])
        ? (rich as { 'm.text': unknown[] })['m.text']
        : [];
    for (const block of blocks) {
      if (typeof block !== 'object' || block === null) continue;
      const { mimetype, body } = block as Record<string, unknown>;
      if (
        (mimetype === undefined || mimetype === 'text/plain') &&
        typeof body === 'string' &&
        !parts.includes(body)
      )
        parts.push(body);
    }
  } else {
    return undefined;
  }
  // PostgreSQL text cannot hold NUL.
  const text = parts.join('\n').replaceAll('\u0000', ' ').slice(0, MAX_TEXT);
  return text.trim() === '' ? undefined : { key, text };
}

/**
 * Called by the event pipeline when a timeline event is persisted, in its transaction: indexes
 * its searchable text unless the room was encrypted before it.
 */
export async function indexEvent(
  trx: Executor,
  roomId: string,
  event: RoomEvent,
  position: number,
  roomEncrypted: boolean,
): Promise<void> {
  if (roomEncrypted) return;
  const found = searchableText(event);
  if (!found) return;
  await trx
    .insertInto('event_search')
    .values({
      event_id: event.event_id,
      room_id: roomId,
      sender: event.sender,
      key: found.key,
      vector: sql<string>`to_tsvector(${CONFIG}::regconfig, ${found.text})`,
      stream_ordering: position,
    })
    .onConflict((oc) => oc.column('event_id').doNothing())
    .execute();
}

/** Takes an event out of the index (it was redacted). */
export async function unindexEvent(db: Executor, eventId: string): Promise<void> {
  await db.deleteFrom('event_search').where('event_id', '=', eventId).execute();
}

/**
 * The rooms whose events `userId` may search: joined now, or left (or banned from) after having
 * joined and not forgotten; without the rooms whose current state has `m.room.encryption`.
 */
export async function searchableRooms(db: Executor, userId: string): Promise<string[]> {
  const rows = await sql<{ room_id: string }>`
    select m.room_id from memberships m
    where m.user_id = ${userId}
      and (m.membership = 'join'
           or (m.membership in ('leave', 'ban') and not m.forgotten
               and exists (select 1 from events e where e.room_id = m.room_id and e.type = 'm.room.member'
                             and e.state_key = ${userId} and e.membership = 'join')))
      and not exists (select 1 from current_state c where c.room_id = m.room_id
                        and c.type = 'm.room.encryption' and c.state_key = '')`.execute(db);
  return rows.rows.map((r) => r.room_id);
}

export interface SearchCandidate {
  event_id: string;
  room_id: string;
  stream_ordering: number;
  rank: number;
  /** The rank as PostgreSQL prints its `real`, so that a page token compares it exactly. */
  rank_text: string;
}

export interface CandidateQuery {
  term: string;
  rooms: readonly string[];
  keys: readonly SearchKey[];
  senders?: readonly string[];
  notSenders?: readonly string[];
  order: 'rank' | 'recent';
  /** Exclusive: candidates after this one in the order. */
  after?: { rank: string; position: number } | { position: number };
  limit: number;
}

/** Web search syntax: a quoted phrase, a word excluded with `-`, or `or`. */
const WEB_SYNTAX = /["]|(^|\s)-\S|\sor\s/i;

/**
 * The text search query of a term. A plain term (words only) matches events holding every
 * word, each also as the start of a longer word ("calib" finds "calibrated"), as Synapse does;
 * a term with web search syntax (`"phrase"`, `-word`, `or`) is read by websearch_to_tsquery.
 * The words of a plain term are letters and digits only, so nothing in them is an operator.
 */
export function termQuery(term: string) {
  if (WEB_SYNTAX.test(term)) return sql`websearch_to_tsquery(${CONFIG}::regconfig, ${term})`;
  const words = (term.match(/[\p{L}\p{N}]+/gu) ?? []).slice(0, 32);
  const prefixes = words.map((w) => `'${w}':*`).join(' & ');
  return sql`to_tsquery(${CONFIG}::regconfig, ${prefixes})`;
}

/** Whether the term has any word the configuration keeps (not only stop words or punctuation). */
export async function termHasWords(db: Executor, term: string): Promise<boolean> {
  const r = await sql<{
    q: string;
  }>`select (${termQuery(term)})::text as q`.execute(db);
  return (r.rows[0]?.q ?? '') !== '';
}

/**
 * Matching index rows in the requested order (rank: ts_rank_cd, highest first; recent: newest
 * first; ties by position, newest first), for the term as termQuery reads it.
 */
export async function searchCandidates(db: Executor, q: CandidateQuery): Promise<SearchCandidate[]> {
  if (q.rooms.length === 0 || q.keys.length === 0) return [];
  const rank = sql`ts_rank_cd(s.vector, q.query)`;
  const conditions = [
    sql`s.vector @@ q.query`,
    sql`s.room_id in (${sql.join(q.rooms)})`,
    sql`s.key in (${sql.join(q.keys)})`,
  ];
  if (q.senders)
    conditions.push(q.senders.length > 0 ? sql`s.sender in (${sql.join(q.senders)})` : sql`false`);
  if (q.notSenders && q.notSenders.length > 0)
    conditions.push(sql`s.sender not in (${sql.join(q.notSenders)})`);
  if (q.after && 'rank' in q.after) {
    conditions.push(
      sql`(${rank} < ${q.after.rank}::real or (${rank} = ${q.after.rank}::real and s.stream_ordering < ${q.after.position}))`,
    );
  } else if (q.after) {
    conditions.push(sql`s.stream_ordering < ${q.after.position}`);
  }
  const order = q.order === 'rank' ? sql`${rank} desc, s.stream_ordering desc` : sql`s.stream_ordering desc`;
  const rows = await sql<SearchCandidate>`
    select s.event_id, s.room_id, s.stream_ordering, ${rank} as rank, ${rank}::text as rank_text
    from event_search s, ${termQuery(q.term)} as q(query)
    where ${sql.join(conditions, sql` and `)}
    order by ${order}
    limit ${q.limit}`.execute(db);
  return rows.rows.map((r) => ({ ...r, stream_ordering: Number(r.stream_ordering), rank: Number(r.rank) }));
}

/**
 * The words of the texts that the term matched, as they are written there (for highlighting):
 * ts_headline marks them, and they are read back out of its marks.
 */
export async function matchedWords(db: Executor, term: string, texts: readonly string[]): Promise<string[]> {
  if (texts.length === 0) return [];
  const options = 'StartSel=\uE000, StopSel=\uE001, HighlightAll=true';
  const values = sql.join(texts.map((t) => sql`(${t})`));
  const r = await sql<{ h: string }>`
    select ts_headline(${CONFIG}::regconfig, v.t, ${termQuery(term)}, ${options}) as h
    from (values ${values}) as v(t)`.execute(db);
  const words = new Set<string>();
  for (const { h } of r.rows) {
    for (const m of h.matchAll(/\uE000([^\uE000\uE001]*)\uE001/g)) if (m[1]) words.add(m[1]);
  }
  return [...words];
}
