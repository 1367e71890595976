import type { Config } from '../config.ts';
import { errors, MatrixError } from '../errors.ts';
import { isValidRoomId, isValidServerName, parseRoomAlias, parseUserId } from '../protocol/identifiers.ts';
import type { JsonObject } from '../protocol/json.ts';
import { requiredLevelForEvent, userPowerLevel } from '../protocol/power-levels.ts';
import { redactEvent } from '../protocol/redaction.ts';
import { getRoomVersion } from '../protocol/room-versions.ts';
import type { Db } from '../storage/connect.ts';
import type { EventRow } from '../storage/database.ts';
import * as roomsRepo from '../storage/rooms.repository.ts';
import type { Session } from './accounts.service.ts';
import type { RoomsService } from './rooms.service.ts';

/**
 * Room aliases and the published room directory (client-server API: Room aliases, Published
 * room directory).
 *
 * Choices where the spec leaves room:
 * - Aliases are created only on this server's domain, by a user joined to the room. A taken
 *   alias is 409 M_UNKNOWN, as the spec's example says.
 * - An alias is deleted by its creator, a server admin, or a joined member with the power to send
 *   `m.room.canonical_alias`. When it was named in the room's canonical alias event and the
 *   deleting user may send that event, an updated event without it is sent as that user;
 *   otherwise the event is left as it is (clients check aliases before use anyway).
 * - Directory visibility is changed by a server admin or a joined member with the power to send
 *   `m.room.canonical_alias` (Synapse's rule: the "moderator" of the room's addresses).
 * - The directory lists published rooms whose join rule lets people in or ask to (public, knock,
 *   restricted, knock_restricted): a published room whose join rule is invite or private is kept
 *   out of the list until its join rule changes, so the directory never shows a private room.
 * - Order: most joined members first, then room ID. Pagination tokens are keyset positions in
 *   that order, so a page continues after (or before) the last room seen; a room whose member
 *   count changes between two requests may move across the boundary, as in Synapse.
 */

/** The rooms a page holds when the client sets no limit, and the most it may ask for. */
export const MAX_PUBLIC_ROOMS_LIMIT = 500;

/** Join rules that keep a published room out of the directory. */
const UNLISTED_JOIN_RULES = new Set(['invite', 'private']);

/** The state the directory reads, all with an empty state key. */
export const SUMMARY_TYPES = [
  'm.room.create',
  'm.room.name',
  'm.room.topic',
  'm.room.canonical_alias',
  'm.room.avatar',
  'm.room.join_rules',
  'm.room.history_visibility',
  'm.room.guest_access',
] as const;

export interface PublicRoomsChunk {
  room_id: string;
  num_joined_members: number;
  world_readable: boolean;
  guest_can_join: boolean;
  join_rule: string;
  name?: string;
  topic?: string;
  canonical_alias?: string;
  avatar_url?: string;
  room_type?: string;
}

export interface PublicRoomsResponse {
  chunk: PublicRoomsChunk[];
  next_batch?: string;
  prev_batch?: string;
  total_room_count_estimate: number;
}

export interface PublicRoomsQuery {
  limit?: number;
  since?: string;
  server?: string;
  filter?: { generic_search_term?: string; room_types?: Array<string | null> };
  include_all_networks?: boolean;
  third_party_instance_id?: string;
}

interface Summary extends PublicRoomsChunk {
  /** Everything the search term is matched against, lower-cased. */
  searchText: string;
}

/** A position in the directory's order, and which way the page goes from it. */
interface Position {
  dir: 'f' | 'b';
  joined: number;
  roomId: string;
}

/** Resolves an alias of another server: its room ID and the servers to join through. */
export type RemoteAliasResolver = (alias: string) => Promise<{ roomId: string; servers: string[] }>;

export class DirectoryService {
  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly rooms: RoomsService,
    private readonly now: () => number = Date.now,
  ) {}

  // -------------------------------------------------------------------------------------------
  // Aliases

  /** PUT /directory/room/{roomAlias} */
  async createAlias(session: Session, alias: string, roomId: string): Promise<void> {
    this.requireLocalAlias(alias);
    if (!isValidRoomId(roomId)) throw errors.invalidParam('room_id is not a valid room ID');
    if (!(await roomsRepo.findRoom(this.db, roomId))) throw errors.notFound('Unknown room');
    if ((await this.rooms.membership(roomId, session.userId)) !== 'join') {
      throw errors.forbidden('Only members of the room may create aliases for it');
    }
    const inserted = await this.db
      .insertInto('room_aliases')
      .values({ alias, room_id: roomId, creator: session.userId, created_ts: this.now() })
      .onConflict((oc) => oc.column('alias').doNothing())
      .executeTakeFirst();
    if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0) {
      throw new MatrixError(409, 'M_UNKNOWN', `Room alias ${alias} already exists`);
    }
  }

  private remote: RemoteAliasResolver | undefined;

  /** Where aliases of other servers are resolved (GET /query/directory on their server). */
  setRemote(resolver: RemoteAliasResolver): void {
    this.remote = resolver;
  }

  /**
   * GET /directory/room/{roomAlias}: ours from the table; another server's asked of it when
   * `remote` (a client's request; never for a federation query, which must not make us ask a
   * third server), its servers as it gave them.
   */
  async resolveAlias(
    alias: string,
    opts: { remote: boolean } = { remote: false },
  ): Promise<{ room_id: string; servers: string[] }> {
    const parts = parseRoomAlias(alias);
    if (!parts) throw errors.invalidParam('Not a valid room alias');
    if (parts.serverName !== this.config.serverName) {
      if (!opts.remote || !this.remote) throw errors.notFound(`Room alias ${alias} not found`);
      const { roomId, servers } = await this.remote(alias);
      return { room_id: roomId, servers };
    }
    const row = await this.db
      .selectFrom('room_aliases')
      .select('room_id')
      .where('alias', '=', alias)
      .executeTakeFirst();
    if (!row) throw errors.notFound(`Room alias ${alias} not found`);
    return { room_id: row.room_id, servers: await this.serversInRoom(row.room_id) };
  }

  /** DELETE /directory/room/{roomAlias} */
  async deleteAlias(session: Session, alias: string): Promise<void> {
    const parts = parseRoomAlias(alias);
    if (!parts) throw errors.invalidParam('Not a valid room alias');
    const row =
      parts.serverName === this.config.serverName
        ? await this.db.selectFrom('room_aliases').selectAll().where('alias', '=', alias).executeTakeFirst()
        : undefined;
    if (!row) throw errors.notFound(`Room alias ${alias} not found`);
    const joined = (await this.rooms.membership(row.room_id, session.userId)) === 'join';
    const mayEditAddresses =
      joined && (await this.canSendState(session.userId, row.room_id, 'm.room.canonical_alias'));
    if (!session.isAdmin && row.creator !== session.userId && !mayEditAddresses) {
      throw errors.forbidden('Only the creator of an alias or a moderator of the room may delete it');
    }
    await this.db
      .deleteFrom('room_aliases')
      .where('alias', '=', alias)
      .where('room_id', '=', row.room_id)
      .execute();
    if (mayEditAddresses) await this.dropFromCanonicalAlias(session, row.room_id, alias);
  }

  /**
   * Sends an `m.room.canonical_alias` event without the deleted alias (and without any other
   * alias of this server that no longer points here, which the event could not carry), if the
   * current one names it. The alias is gone either way: a refusal here is not the client's error.
   */
  private async dropFromCanonicalAlias(session: Session, roomId: string, alias: string): Promise<void> {
    const current = await this.rooms.currentStateRow(roomId, 'm.room.canonical_alias', '');
    if (!current || current.redacted_by !== null) return;
    const content = current.json.content as JsonObject;
    const alt = Array.isArray(content.alt_aliases) ? content.alt_aliases : [];
    if (content.alias !== alias && !alt.includes(alias)) return;
    const stale = new Set<string>([alias]);
    const local = [content.alias, ...alt].filter(
      (a): a is string => typeof a === 'string' && a !== alias && this.isLocalAlias(a),
    );
    if (local.length > 0) {
      const live = await this.db
        .selectFrom('room_aliases')
        .select('alias')
        .where('alias', 'in', local)
        .where('room_id', '=', roomId)
        .execute();
      const liveSet = new Set(live.map((r) => r.alias));
      for (const a of local) if (!liveSet.has(a)) stale.add(a);
    }
    const next: JsonObject = { ...content };
    if (typeof content.alias === 'string' && stale.has(content.alias)) delete next.alias;
    if (Array.isArray(content.alt_aliases)) {
      next.alt_aliases = content.alt_aliases.filter((a) => typeof a !== 'string' || !stale.has(a));
    }
    try {
      await this.rooms.sendState(session, roomId, 'm.room.canonical_alias', '', next);
    } catch (err) {
      if (!(err instanceof MatrixError) || err.status >= 500) throw err;
    }
  }

  /** GET /rooms/{roomId}/aliases: joined members, or anyone when the room is world readable. */
  async localAliases(session: Session, roomId: string): Promise<{ aliases: string[] }> {
    if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
    const joined = (await this.rooms.membership(roomId, session.userId)) === 'join';
    if (!joined && !(await this.isWorldReadable(roomId))) {
      throw errors.forbidden('You are not a member of this room');
    }
    const rows = await this.db
      .selectFrom('room_aliases')
      .select('alias')
      .where('room_id', '=', roomId)
      .orderBy('created_ts')
      .orderBy('alias')
      .execute();
    return { aliases: rows.map((r) => r.alias) };
  }

  // -------------------------------------------------------------------------------------------
  // Directory visibility

  /** GET /directory/list/room/{roomId} */
  async getVisibility(roomId: string): Promise<{ visibility: 'public' | 'private' }> {
    if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
    const room = await roomsRepo.findRoom(this.db, roomId);
    if (!room) throw errors.notFound('Room not found');
    return { visibility: room.published ? 'public' : 'private' };
  }

  /** PUT /directory/list/room/{roomId} */
  async setVisibility(session: Session, roomId: string, visibility: 'public' | 'private'): Promise<void> {
    if (!isValidRoomId(roomId)) throw errors.invalidParam('Not a valid room ID');
    if (!(await roomsRepo.findRoom(this.db, roomId))) throw errors.notFound('Room not found');
    if (!session.isAdmin) {
      const joined = (await this.rooms.membership(roomId, session.userId)) === 'join';
      if (!joined || !(await this.canSendState(session.userId, roomId, 'm.room.canonical_alias'))) {
        throw errors.forbidden("You may not change this room's visibility in the directory");
      }
    }
    await this.db
      .updateTable('rooms')
      .set({ published: visibility === 'public' })
      .where('room_id', '=', roomId)
      .execute();
  }

  // -------------------------------------------------------------------------------------------
  // The published room directory

  /** GET and POST /publicRooms */
  async publicRooms(query: PublicRoomsQuery): Promise<PublicRoomsResponse> {
    if (query.server !== undefined && query.server !== this.config.serverName) {
      if (!isValidServerName(query.server)) throw errors.invalidParam('server is not a valid server name');
      // Another server's directory needs federation, which this server does not have yet.
      throw errors.notFound(`The directory of ${query.server} cannot be fetched from this server`);
    }
    if (query.include_all_networks && query.third_party_instance_id !== undefined) {
      throw errors.invalidParam('third_party_instance_id cannot be combined with include_all_networks');
    }
    // An empty token is taken as none, as some clients send one for the first page.
    const position = query.since ? decodeToken(query.since) : undefined;
    const limit = Math.min(query.limit ?? MAX_PUBLIC_ROOMS_LIMIT, MAX_PUBLIC_ROOMS_LIMIT);

    // No application service bridges a third-party network here, so no room is on one.
    const rooms = query.third_party_instance_id !== undefined ? [] : await this.listedRooms();
    const term = query.filter?.generic_search_term?.trim().toLowerCase();
    // An empty list of room types filters nothing, like an absent one.
    const types = query.filter?.room_types?.length ? query.filter.room_types : undefined;
    const matching = rooms.filter(
      (r) =>
        (!term || r.searchText.includes(term)) &&
        (types === undefined || types.includes(r.room_type ?? null)),
    );
    matching.sort(compareRooms);

    let start: number;
    let end: number;
    if (!position) {
      start = 0;
      end = Math.min(limit, matching.length);
    } else if (position.dir === 'f') {
      start = matching.findIndex((r) => compareToPosition(r, position) > 0);
      if (start < 0) start = matching.length;
      end = Math.min(start + limit, matching.length);
    } else {
      end = matching.findIndex((r) => compareToPosition(r, position) >= 0);
      if (end < 0) end = matching.length;
      start = Math.max(0, end - limit);
    }
    const page = matching.slice(start, end);
    const first = page[0];
    const last = page[page.length - 1];
    return {
      chunk: page.map(toChunk),
      ...(last && end < matching.length ? { next_batch: encodeToken('f', last) } : {}),
      ...(first && start > 0 ? { prev_batch: encodeToken('b', first) } : {}),
      total_room_count_estimate: matching.length,
    };
  }

  /** Every published room the directory may show, summarised from its current state. */
  private async listedRooms(): Promise<Summary[]> {
    const published = await this.db
      .selectFrom('rooms')
      .select(['room_id', 'room_version'])
      .where('published', '=', true)
      .execute();
    if (published.length === 0) return [];
    const roomIds = published.map((r) => r.room_id);
    const [stateRows, counts] = await Promise.all([
      this.db
        .selectFrom('current_state')
        .innerJoin('events', 'events.event_id', 'current_state.event_id')
        .selectAll('events')
        .where('current_state.room_id', 'in', roomIds)
        .where('current_state.state_key', '=', '')
        .where('current_state.type', 'in', [...SUMMARY_TYPES])
        .execute(),
      this.db
        .selectFrom('memberships')
        .select((eb) => ['room_id', eb.fn.countAll().as('n')])
        .where('room_id', 'in', roomIds)
        .where('membership', '=', 'join')
        .groupBy('room_id')
        .execute(),
    ]);
    const joinedCounts = new Map(counts.map((c) => [c.room_id, Number(c.n)]));
    const versions = new Map(published.map((r) => [r.room_id, r.room_version]));
    const state = new Map<string, Map<string, JsonObject>>();
    for (const row of stateRows) {
      let m = state.get(row.room_id);
      if (!m) {
        m = new Map();
        state.set(row.room_id, m);
      }
      m.set(row.type, contentOf(row, versions.get(row.room_id)!));
    }

    const out: Summary[] = [];
    for (const { room_id } of published) {
      const s = state.get(room_id) ?? new Map<string, JsonObject>();
      const chunk = chunkFromState(room_id, s, joinedCounts.get(room_id) ?? 0);
      if (UNLISTED_JOIN_RULES.has(chunk.join_rule)) continue;
      const altRaw = s.get('m.room.canonical_alias')?.alt_aliases;
      const altAliases = Array.isArray(altRaw)
        ? altRaw.filter((a): a is string => typeof a === 'string')
        : [];
      out.push({
        ...chunk,
        searchText: [chunk.name, chunk.topic, chunk.canonical_alias, ...altAliases]
          .filter((x) => x !== undefined)
          .join('\n')
          .toLowerCase(),
      });
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // Helpers

  private requireLocalAlias(alias: string): void {
    const parts = parseRoomAlias(alias);
    if (!parts) throw errors.invalidParam('Not a valid room alias');
    if (parts.serverName !== this.config.serverName) {
      throw errors.invalidParam(`Aliases can only be created on ${this.config.serverName}`);
    }
  }

  private isLocalAlias(alias: string): boolean {
    return parseRoomAlias(alias)?.serverName === this.config.serverName;
  }

  /** This server first, then the other servers of joined members. */
  private async serversInRoom(roomId: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('memberships')
      .select('user_id')
      .where('room_id', '=', roomId)
      .where('membership', '=', 'join')
      .execute();
    const servers = new Set([this.config.serverName]);
    for (const r of rows) {
      const server = parseUserId(r.user_id)?.serverName;
      if (server) servers.add(server);
    }
    return [...servers];
  }

  private async isWorldReadable(roomId: string): Promise<boolean> {
    const room = await roomsRepo.findRoom(this.db, roomId);
    if (!room) return false;
    const row = await this.rooms.currentStateRow(roomId, 'm.room.history_visibility', '');
    return row !== undefined && contentOf(row, room.room_version).history_visibility === 'world_readable';
  }

  /** Whether the user's power level, by the current power levels, reaches that of a state event type. */
  private async canSendState(userId: string, roomId: string, type: string): Promise<boolean> {
    const room = await roomsRepo.findRoom(this.db, roomId);
    const rv = room && getRoomVersion(room.room_version);
    if (!rv) return false;
    const [pl, create] = await Promise.all([
      this.rooms.currentStateRow(roomId, 'm.room.power_levels', ''),
      this.rooms.currentStateRow(roomId, 'm.room.create', ''),
    ]);
    const plEvent = pl ? { content: contentOf(pl, room.room_version) } : undefined;
    const createEvent = create
      ? { sender: create.sender, content: contentOf(create, room.room_version) }
      : undefined;
    return userPowerLevel(userId, plEvent, createEvent, rv) >= requiredLevelForEvent(type, true, plEvent);
  }
}

/** An event's content as clients see it: what redaction keeps, if it was redacted. */
function contentOf(row: EventRow, roomVersion: string): JsonObject {
  const rv = getRoomVersion(roomVersion);
  const event = roomsRepo.toRoomEvent(row);
  const content = row.redacted_by !== null && rv ? redactEvent(event, rv).content : event.content;
  return (content ?? {}) as JsonObject;
}

/**
 * A room's /publicRooms chunk from the contents of its current state events (by type, empty
 * state keys) and its joined member count; also the base of room summaries (spaces.service.ts).
 */
export function chunkFromState(
  roomId: string,
  s: ReadonlyMap<string, JsonObject>,
  joinedMembers: number,
): PublicRoomsChunk {
  const str = (type: string, key: string) => {
    const v = s.get(type)?.[key];
    return typeof v === 'string' && v !== '' ? v : undefined;
  };
  const name = str('m.room.name', 'name');
  const topic = topicOf(s.get('m.room.topic'));
  const alias = str('m.room.canonical_alias', 'alias');
  const avatar = str('m.room.avatar', 'url');
  const roomType = str('m.room.create', 'type');
  return {
    room_id: roomId,
    num_joined_members: joinedMembers,
    world_readable: str('m.room.history_visibility', 'history_visibility') === 'world_readable',
    guest_can_join: str('m.room.guest_access', 'guest_access') === 'can_join',
    // Without a join rules event the auth rules let nobody join freely: treat it as invite.
    join_rule: str('m.room.join_rules', 'join_rule') ?? 'invite',
    ...(name !== undefined ? { name } : {}),
    ...(topic !== undefined ? { topic } : {}),
    ...(alias !== undefined ? { canonical_alias: alias } : {}),
    ...(avatar?.startsWith('mxc://') ? { avatar_url: avatar } : {}),
    ...(roomType !== undefined ? { room_type: roomType } : {}),
  };
}

/** The plain-text topic: `topic`, or else the text/plain representation in `m.topic`. */
function topicOf(content: JsonObject | undefined): string | undefined {
  if (!content) return undefined;
  if (typeof content.topic === 'string' && content.topic !== '') return content.topic;
  const block = content['m.topic'];
  const texts =
    block && typeof block === 'object' && !Array.isArray(block) ? (block as JsonObject)['m.text'] : undefined;
  if (!Array.isArray(texts)) return undefined;
  for (const t of texts) {
    if (!t || typeof t !== 'object' || Array.isArray(t)) continue;
    const { body, mimetype } = t as JsonObject;
    if (typeof body === 'string' && body !== '' && (mimetype === undefined || mimetype === 'text/plain')) {
      return body;
    }
  }
  return undefined;
}

function toChunk(room: Summary): PublicRoomsChunk {
  const { searchText: _, ...chunk } = room;
  return chunk;
}

/** Most joined members first, then room ID. */
function compareRooms(a: Summary, b: Summary): number {
  if (a.num_joined_members !== b.num_joined_members) return b.num_joined_members - a.num_joined_members;
  return a.room_id < b.room_id ? -1 : a.room_id > b.room_id ? 1 : 0;
}

/** Where a room falls relative to a position: negative before it, positive after it. */
function compareToPosition(room: Summary, p: Position): number {
  if (room.num_joined_members !== p.joined) return p.joined - room.num_joined_members;
  return room.room_id < p.roomId ? -1 : room.room_id > p.roomId ? 1 : 0;
}

function encodeToken(dir: 'f' | 'b', room: Summary): string {
  return `${dir}${Buffer.from(JSON.stringify([room.num_joined_members, room.room_id])).toString('base64url')}`;
}

function decodeToken(token: string): Position {
  const dir = token[0];
  if (dir === 'f' || dir === 'b') {
    try {
      const value: unknown = JSON.parse(Buffer.from(token.slice(1), 'base64url').toString('utf8'));
      if (
        Array.isArray(value) &&
        value.length === 2 &&
        Number.isSafeInteger(value[0]) &&
        value[0] >= 0 &&
        typeof value[1] === 'string'
      ) {
        return { dir, joined: value[0] as number, roomId: value[1] };
      }
    } catch {
      // fall through to the error below
    }
  }
  throw errors.invalidParam('Invalid pagination token');
}
