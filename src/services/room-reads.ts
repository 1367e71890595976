import { type RoomEvent, type StateTuple, stateTuple, toWirePdu } from '../protocol/event.ts';
import type { JsonObject } from '../protocol/json.ts';
import { redactEvent } from '../protocol/redaction.ts';
import { getRoomVersion } from '../protocol/room-versions.ts';
import type { Executor } from '../storage/accounts.repository.ts';
import type { EventRow } from '../storage/database.ts';
import * as rooms from '../storage/rooms.repository.ts';

/**
 * Reading rooms: state at a point, events in the client format, and who may see which event
 * (history visibility). State groups and events never change once written, so both are cached.
 */
export type ClientEvent = Record<string, unknown> & { event_id: string; type: string };

const CACHE_LIMIT = 5000;

class Lru<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly limit: number) {}
  get(key: K): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }
  clear(): void {
    this.map.clear();
  }
  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.limit) this.map.delete(this.map.keys().next().value as K);
  }
}

/** The state event types stripped state carries. */
const STRIPPED_TYPES = new Set([
  'm.room.create',
  'm.room.join_rules',
  'm.room.name',
  'm.room.avatar',
  'm.room.canonical_alias',
  'm.room.encryption',
  'm.room.topic',
]);

/**
 * Adds what a viewer should see of other events' relations to events about to be served
 * (`unsigned["m.relations"]`); set by the relations service.
 */
export type RelationBundler = (
  db: Executor,
  rows: readonly EventRow[],
  events: readonly ClientEvent[],
  viewer: string,
  /** When known: the only events among `rows` that anything relates to. */
  candidates?: ReadonlySet<string>,
) => Promise<void>;

export class RoomReader {
  private bundler: RelationBundler | undefined;

  /** Bundled aggregations for events served to a viewer (spec/relations.md). */
  setBundler(bundler: RelationBundler): void {
    this.bundler = bundler;
  }
  private readonly groups = new Lru<number, rooms.StateIds>(CACHE_LIMIT);
  private readonly events = new Lru<string, EventRow>(CACHE_LIMIT * 4);

  private readonly chainLengths = new Lru<number, number>(CACHE_LIMIT);

  /** How many deltas a state group sits on (fixed once written). */
  async chainLengthOf(db: Executor, groupId: number): Promise<number> {
    let n = this.chainLengths.get(groupId);
    if (n === undefined) {
      n = await rooms.chainLengthOf(db, groupId);
      this.chainLengths.set(groupId, n);
    }
    return n;
  }

  private readonly roomVersions = new Map<string, string>();

  /**
   * Forgets everything cached: after a retention purge or a room's deletion (src/services/
   * retention), which are the only changes to stored events besides redaction marks.
   */
  clear(): void {
    this.groups.clear();
    this.events.clear();
    this.chainLengths.clear();
    this.roomVersions.clear();
  }

  /**
   * A room's version (fixed at creation), or undefined when there is no such room. A known
   * version is kept until `clear` (a deleted room).
   */
  async roomVersionOf(db: Executor, roomId: string): Promise<string | undefined> {
    const known = this.roomVersions.get(roomId);
    if (known !== undefined) return known;
    const room = await rooms.findRoom(db, roomId);
    if (room) {
      if (this.roomVersions.size >= 100_000) this.roomVersions.clear();
      this.roomVersions.set(roomId, room.room_version);
    }
    return room?.room_version;
  }

  async stateIdsAt(db: Executor, groupId: number): Promise<rooms.StateIds> {
    let state = this.groups.get(groupId);
    if (!state) {
      state = await rooms.loadStateGroup(db, groupId);
      this.groups.set(groupId, state);
    }
    return state;
  }

  /**
   * Event rows by ID. An event's only mutable part is its redaction mark, so a cached row serves
   * when the caller reads parts redaction keeps (membership, history visibility: `stable`), or
   * when it was already redacted; otherwise the row is read again.
   */
  async eventRows(db: Executor, ids: readonly string[], stable = false): Promise<Map<string, EventRow>> {
    const out = new Map<string, EventRow>();
    const missing: string[] = [];
    for (const id of ids) {
      const row = this.events.get(id);
      if (row && (stable || row.redacted_by !== null)) out.set(id, row);
      else missing.push(id);
    }
    for (const row of await rooms.getEventRows(db, missing)) {
      this.events.set(row.event_id, row);
      out.set(row.event_id, row);
    }
    return out;
  }

  /** Full state events at a state group, as rows. */
  /**
   * The stripped state of a room at a state group (server-server API: stripped state): the
   * events that let a client show a room it is invited to or knocking on, plus the member events
   * of `members` (the inviter).
   */
  async strippedStateAt(db: Executor, groupId: number, members: readonly string[]): Promise<JsonObject[]> {
    const rows = await this.stateEventsAt(db, groupId, (k) => {
      const [type, stateKey] = k.split('\u0000') as [string, string];
      return STRIPPED_TYPES.has(type) || (type === 'm.room.member' && members.includes(stateKey));
    });
    return rows.map((r): JsonObject => {
      // The create event goes whole, as a PDU (MSC4311, as Synapse sends it): with its hashes
      // and signatures the receiver can check it against the room ID, which in v12 is its hash.
      // It is in the federation format of its room version (named in its content; 1 if not),
      // so in versions 1 and 2 it carries its event ID, which its signatures cover.
      if (r.type === 'm.room.create') {
        const { unsigned: _unsigned, ...json } = r.json as JsonObject;
        const rv = getRoomVersion(String((json.content as JsonObject | undefined)?.room_version ?? '1'));
        return rv ? toWirePdu({ ...json, event_id: r.event_id }, rv) : json;
      }
      return {
        type: r.type,
        state_key: r.state_key ?? '',
        sender: r.sender,
        content: r.json.content as JsonObject,
      };
    });
  }

  async stateEventsAt(
    db: Executor,
    groupId: number,
    filter?: (key: StateTuple) => boolean,
  ): Promise<EventRow[]> {
    const ids = await this.stateIdsAt(db, groupId);
    const wanted = [...ids].filter(([k]) => !filter || filter(k)).map(([, id]) => id);
    const rows = await this.eventRows(db, wanted);
    return wanted.map((id) => rows.get(id)).filter((r): r is EventRow => r !== undefined);
  }

  async stateEventAt(
    db: Executor,
    groupId: number,
    type: string,
    stateKey: string,
  ): Promise<EventRow | undefined> {
    const id = (await this.stateIdsAt(db, groupId)).get(stateTuple(type, stateKey));
    if (id === undefined) return undefined;
    return (await this.eventRows(db, [id], true)).get(id);
  }

  /**
   * Whether `userId` may see the event (client-server API: History visibility). The rules read
   * the state after the event, so a user sees their own join:
   * - joined at the event: yes;
   * - world_readable: yes;
   * - shared: if the user joined at any point after the event (or is joined now);
   * - invited: if invited or joined at the event;
   * - joined: only if joined at the event.
   */
  async canSee(
    db: Executor,
    userId: string,
    row: EventRow,
    joinedAfter: (position: number) => Promise<boolean>,
  ) {
    const membershipRow = await this.stateEventAt(db, row.state_group_after, 'm.room.member', userId);
    const membership = membershipRow?.membership ?? 'leave';
    if (membership === 'join') return true;
    // A user sees their own membership events (a leave, kick or ban) when they were joined,
    // invited or knocking before it: otherwise a rejected invite, a rescinded or refused knock
    // would leave the room on their clients with no event saying so (Synapse does the same).
    if (row.type === 'm.room.member' && row.state_key === userId) {
      const before = await this.stateEventAt(db, row.state_group_before, 'm.room.member', userId);
      const was = before?.membership;
      if (was === 'join' || was === 'invite' || was === 'knock') return true;
    }
    const hvRow = await this.stateEventAt(db, row.state_group_after, 'm.room.history_visibility', '');
    const hv =
      typeof hvRow?.json.content === 'object'
        ? (hvRow.json.content as Record<string, unknown>).history_visibility
        : undefined;
    const visibility = typeof hv === 'string' ? hv : 'shared';
    if (visibility === 'world_readable') return true;
    if (visibility === 'invited' && membership === 'invite') return true;
    if (visibility === 'shared') return joinedAfter(row.stream_ordering);
    return false;
  }

  /** Keeps the events `userId` may see, in the order given. */
  async filterVisible(db: Executor, userId: string, rows: EventRow[]): Promise<EventRow[]> {
    const joins = new Map<string, number[]>();
    const joinedAfter = async (roomId: string, position: number) => {
      let list = joins.get(roomId);
      if (!list) {
        list = await rooms.joinPositions(db, roomId, userId);
        joins.set(roomId, list);
      }
      return list.some((p) => p >= position);
    };
    const out: EventRow[] = [];
    for (const row of rows) {
      if (await this.canSee(db, userId, row, (p) => joinedAfter(row.room_id, p))) out.push(row);
    }
    return out;
  }

  /** The client format of an event (client-server API: Room Event Format), redacted if it was. */
  async toClient(
    db: Executor,
    row: EventRow,
    opts: { now: number; txnIds?: Map<string, string> },
  ): Promise<ClientEvent> {
    let pdu = rooms.toRoomEvent(row) as RoomEvent & Record<string, unknown>;
    const unsigned: Record<string, unknown> = { age: Math.max(0, opts.now - row.origin_server_ts) };
    if (row.redacted_by !== null) {
      const room = await db
        .selectFrom('rooms')
        .select('room_version')
        .where('room_id', '=', row.room_id)
        .executeTakeFirst();
      const rv = getRoomVersion(room?.room_version ?? '12')!;
      pdu = { ...(redactEvent(pdu, rv) as RoomEvent), event_id: row.event_id };
      const redaction = (await this.eventRows(db, [row.redacted_by])).get(row.redacted_by);
      if (redaction) unsigned.redacted_because = await this.toClient(db, redaction, { now: opts.now });
    }
    const txnId = opts.txnIds?.get(row.event_id);
    if (txnId !== undefined) unsigned.transaction_id = txnId;
    if (row.state_key !== null) {
      const before = await this.stateEventAt(db, row.state_group_before, row.type, row.state_key);
      if (before) {
        unsigned.prev_content = before.json.content;
        unsigned.replaces_state = before.event_id;
        unsigned.prev_sender = before.sender;
      }
    }
    const event: ClientEvent = {
      content: pdu.content,
      event_id: row.event_id,
      origin_server_ts: row.origin_server_ts,
      room_id: row.room_id,
      sender: row.sender,
      type: row.type,
      unsigned,
    };
    if (row.state_key !== null) event.state_key = row.state_key;
    if (pdu.redacts !== undefined) event.redacts = pdu.redacts;
    else if (row.type === 'm.room.redaction' && typeof pdu.content.redacts === 'string')
      event.redacts = pdu.content.redacts;
    return event;
  }

  async toClientMany(
    db: Executor,
    rows: EventRow[],
    opts: {
      now: number;
      viewer?: { userId: string; deviceId: string };
      /** The only events of `rows` that may have relations to bundle, when the caller knows. */
      relationCandidates?: ReadonlySet<string>;
    },
  ) {
    let txnIds: Map<string, string> | undefined;
    if (opts.viewer) {
      const own = rows.filter((r) => r.sender === opts.viewer!.userId).map((r) => r.event_id);
      if (own.length > 0) {
        const txns = await db
          .selectFrom('event_txns')
          .select(['event_id', 'txn_id'])
          .where('user_id', '=', opts.viewer.userId)
          .where('device_id', '=', opts.viewer.deviceId)
          .where('event_id', 'in', own)
          .execute();
        txnIds = new Map(txns.map((t) => [t.event_id, t.txn_id]));
      }
    }
    const out: ClientEvent[] = [];
    for (const row of rows) {
      const event = await this.toClient(db, row, { now: opts.now, ...(txnIds ? { txnIds } : {}) });
      // The viewer's membership in the state after the event (MSC4115, spec v1.11
      // `unsigned.membership`): "leave" when they had none.
      if (opts.viewer) {
        const member = await this.stateEventAt(
          db,
          row.state_group_after,
          'm.room.member',
          opts.viewer.userId,
        );
        (event.unsigned as Record<string, unknown>).membership = member?.membership ?? 'leave';
      }
      out.push(event);
    }
    if (opts.viewer && this.bundler && rows.length > 0 && opts.relationCandidates?.size !== 0)
      await this.bundler(db, rows, out, opts.viewer.userId, opts.relationCandidates);
    return out;
  }
}
