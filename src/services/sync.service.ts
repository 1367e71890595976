import { sql } from 'kysely';
import { errors } from '../errors.ts';
import type { JsonObject } from '../protocol/json.ts';
import { accountDataBetween, getAccountData } from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';
import type { EventRow, MembershipRow } from '../storage/database.ts';
import { relationOf } from '../storage/relations.repository.ts';
import * as roomStore from '../storage/rooms.repository.ts';
import type { ChangeWindow } from '../streams/change-cache.ts';
import type { Notifier } from '../streams/notifier.ts';
import { currentPosition } from '../streams/positions.ts';
import type { Session } from './accounts.service.ts';
import type { KeysService } from './keys.service.ts';
import type { PresenceService } from './presence.service.ts';
import { defaultPushRules } from './push-rules.ts';
import type { ClientEvent, RoomReader } from './room-reads.ts';
import type { RoomsService } from './rooms.service.ts';
import type { ToDeviceService } from './to-device.service.ts';
import type { TypingService } from './typing.service.ts';

/** What sync needs of a filter; the filters service parses the client's filter into this. */
export interface SyncFilter {
  timelineLimit: number;
  /** Whether an event may appear in a room timeline. */
  timelineMatches?: (event: {
    type: string;
    sender: string;
    room_id: string;
    content: JsonObject;
  }) => boolean;
  /** Whether a state event may appear in a room's `state` (applied to left rooms so far). */
  stateMatches?: (event: { type: string; sender: string; room_id: string; content: JsonObject }) => boolean;
  lazyLoadMembers?: boolean;
  includeLeave?: boolean;
  roomIncluded?: (roomId: string) => boolean;
  /**
   * `use_state_after` (spec v1.16): joined rooms carry `state_after`, the state at the end of the
   * timeline (the room's resolved state there, which a forked history may not end on), instead of
   * `state`.
   */
  useStateAfter?: boolean;
}

export const DEFAULT_TIMELINE_LIMIT = 10;
/** Recent event rows kept in memory for timelines. */
const RECENT_ROWS = 10_000;
/** Longest range of stream positions scanned in memory for relations to bundle. */
const RELATION_SCAN_LIMIT = 2_000;
/** Events read per query when building a timeline (at least; twice the limit when that is more). */
const TIMELINE_BATCH = 20;
export const MAX_SYNC_TIMEOUT_MS = 60_000;

/** A sync token: `s<stream position>_<typing serial>`. */
export interface SyncToken {
  position: number;
  typing: number;
}

export function parseSyncToken(raw: string): SyncToken {
  const m = /^s(\d{1,15})(?:_(\d{1,16}))?$/.exec(raw);
  if (!m) throw errors.invalidParam('Invalid since token');
  return { position: Number(m[1]), typing: Number(m[2] ?? 0) };
}

export function formatSyncToken(t: SyncToken): string {
  return `s${t.position}_${t.typing}`;
}

export interface SyncResponse {
  next_batch: string;
  rooms: {
    join: Record<string, JsonObject>;
    invite: Record<string, JsonObject>;
    leave: Record<string, JsonObject>;
    knock: Record<string, JsonObject>;
  };
  account_data: { events: JsonObject[] };
  presence: { events: JsonObject[] };
  to_device: { events: JsonObject[] };
  device_lists: { changed: string[]; left: string[] };
  device_one_time_keys_count: Record<string, number>;
  device_unused_fallback_key_types?: string[];
}

/**
 * The sync engine. /sync (long-poll) and the WebSocket are two transports over `sync`: both get
 * the same payload for the same token, and `next_batch` lets a client move between them.
 */
export class SyncService {
  constructor(
    private readonly db: Db,
    private readonly rooms: RoomsService,
    private readonly reader: RoomReader,
    private readonly notifier: Notifier,
    private readonly typing: TypingService,
    private readonly e2ee?: { keys: KeysService; toDevice: ToDeviceService },
    private readonly now: () => number = Date.now,
  ) {
    notifier.onChange((change) => {
      if (change.everyone) {
        // Changes made while the bus was down: none of them was heard, so nothing cached holds.
        this.membershipCache.clear();
        this.keyCountCache.clear();
        this.unreadCache.clear();
      } else if (change.kind === 'event') {
        for (const userId of change.userIds ?? []) this.membershipCache.delete(userId);
        if (change.redacts !== undefined) this.forgetRow(change.redacts);
      } else if (change.kind === 'keys' || change.kind === 'device_list') {
        for (const userId of change.userIds ?? []) {
          this.keyEpochs.set(userId, (this.keyEpochs.get(userId) ?? 0) + 1);
          this.keyCountCache.delete(userId);
        }
      }
    });
  }

  private presence: PresenceService | undefined;

  /** Presence in /sync (spec/presence.md); without it the `presence` section stays empty. */
  setPresence(presence: PresenceService): void {
    this.presence = presence;
  }

  /** Each device's one-time key counts and unused fallback key types, as last read, by user. */
  private readonly keyCountCache = new Map<
    string,
    Map<string, { counts: Record<string, number>; fallback: string[] }>
  >();
  /** Bumped on every change of a user's keys, so a read that raced one is not kept. */
  private readonly keyEpochs = new Map<string, number>();
  /** When each device last acknowledged its to-device messages here, and up to where. */
  private readonly toDeviceAcks = new Map<string, { at: number; upTo: number }>();

  /** Each user's memberships as last read, and the position they were read at. */
  private readonly membershipCache = new Map<string, { at: number; rows: MembershipRow[] }>();
  /** Each (user, room)'s unread counts as last computed, and the position they hold at. */
  private readonly unreadCache = new Map<
    string,
    { at: number; counts: { notification_count: number; highlight_count: number } }
  >();

  /** One sync: returns at once when something is new (or on initial sync), else waits. */
  async sync(
    session: Session,
    opts: { since?: string; timeoutMs: number; fullState: boolean; filter: SyncFilter; signal?: AbortSignal },
  ): Promise<SyncResponse> {
    const since = opts.since !== undefined ? parseSyncToken(opts.since) : undefined;
    const deadline = this.now() + Math.min(Math.max(opts.timeoutMs, 0), MAX_SYNC_TIMEOUT_MS);
    for (;;) {
      const mark = this.notifier.mark;
      const { response, roomIds } = await this.buildWithRooms(session, since, opts.fullState, opts.filter);
      const remaining = deadline - this.now();
      if (
        since === undefined ||
        opts.fullState ||
        !isEmptySync(response) ||
        remaining <= 0 ||
        opts.signal?.aborted
      ) {
        return response;
      }
      await this.notifier.wait(session.userId, roomIds, remaining, opts.signal, mark);
    }
  }

  /** Builds the response between `since` (exclusive) and now. */
  async build(session: Session, since: SyncToken | undefined, fullState: boolean, filter: SyncFilter) {
    return (await this.buildWithRooms(session, since, fullState, filter)).response;
  }

  /** The response, and the rooms the user has a membership in (what a waiting sync listens to). */
  private async buildWithRooms(
    session: Session,
    since: SyncToken | undefined,
    fullState: boolean,
    filter: SyncFilter,
  ) {
    const userId = session.userId;
    const from = since?.position ?? 0;
    // The change cache knows the newest position this process has heard of without a gap, and
    // what changed below it; else (a gap, or a token from a process that heard more) ask the
    // database.
    const cache = this.notifier.changes;
    let upTo: number;
    if (cache && !cache.hasGap && cache.position >= from) upTo = cache.position;
    else {
      upTo = await currentPosition(this.db);
      // A hole the database says is behind it may never fill (a rolled-back position).
      cache?.settle(upTo);
    }
    const incremental = since !== undefined && !fullState;
    const window = incremental ? cache?.window(from, upTo) : undefined;
    const typingSerial = this.typing.serial;
    const response: SyncResponse = {
      next_batch: formatSyncToken({ position: upTo, typing: typingSerial }),
      rooms: { join: {}, invite: {}, leave: {}, knock: {} },
      account_data: { events: [] },
      presence: { events: [] },
      to_device: { events: [] },
      device_lists: { changed: [], left: [] },
      device_one_time_keys_count: {},
    };

    if (!window || window.concernsUser(userId, 'account_data', null)) {
      const globalData = await accountDataBetween(this.db, userId, '', from, upTo);
      response.account_data.events = globalData.map((r) => ({ type: r.type, content: r.content }));
    }
    if (since === undefined) {
      // Push rules are not stored per user yet: an initial sync carries the server defaults.
      response.account_data.events.push({
        type: 'm.push_rules',
        content: { global: defaultPushRules(userId) } as unknown as JsonObject,
      });
    }

    if (
      this.presence?.enabled &&
      (!window ||
        // A presence change, or a membership change that may make users meet.
        [...window.changes()].some(
          (c) => c.kind === 'presence' || (c.kind === 'event' && (c.userIds?.length ?? 0) > 0),
        ))
    ) {
      response.presence.events = await this.presence.eventsFor(userId, incremental ? from : undefined, upTo);
    }

    const memberships = await this.memberships(userId, upTo, incremental);
    const typingChanged = since === undefined || since.typing !== typingSerial;
    // On an incremental sync, find the joined rooms with anything new (from the change cache, or
    // in one query), and build only those (plus rooms whose typing changed): most rooms are quiet
    // most of the time.
    const joinedIds = memberships.filter((m) => m.membership === 'join').map((m) => m.room_id);
    const changed = !incremental
      ? undefined
      : window
        ? this.changedRoomsIn(window, userId, joinedIds)
        : await this.changedRooms(userId, joinedIds, from, upTo);

    let ignored: Set<string> | undefined;
    for (const m of memberships) {
      if (filter.roomIncluded && !filter.roomIncluded(m.room_id)) continue;
      const changedSince = m.stream_ordering > from;
      if (m.membership === 'join') {
        const typingHere =
          typingChanged && (since === undefined || this.typing.roomSerial(m.room_id) > since.typing);
        if (changed && !changedSince && !changed.has(m.room_id)) {
          if (typingHere) {
            response.rooms.join[m.room_id] = {
              timeline: { events: [], limited: false, prev_batch: `s${upTo}` },
              state: { events: [] },
              ephemeral: {
                events: [{ type: 'm.typing', content: { user_ids: this.typing.typingUsers(m.room_id) } }],
              },
              account_data: { events: [] },
            };
          }
          continue;
        }
        const room = await this.joinedRoom(session, m.room_id, {
          from,
          upTo,
          // A room joined since the token is new to the client: send it whole. A member event
          // that only changed a profile (join to join) is an ordinary timeline event.
          initial:
            since === undefined ||
            fullState ||
            (changedSince && !(await this.joinedThroughout(m.room_id, userId, from, upTo))),
          filter,
          typingChanged: typingHere,
          window,
        });
        if (room) response.rooms.join[m.room_id] = room;
      } else if (m.membership === 'invite' || m.membership === 'knock') {
        if (!changedSince && since !== undefined) continue;
        if (m.membership === 'invite') {
          // Invites from users the invitee ignores are never sent (client-server API: Ignoring Users).
          ignored ??= await this.ignoredUsers(userId);
          const sender = (await this.reader.eventRows(this.db, [m.event_id])).get(m.event_id)?.sender;
          if (sender !== undefined && ignored.has(sender)) continue;
        }
        const stripped = await this.strippedState(m.event_id);
        if (m.membership === 'invite')
          response.rooms.invite[m.room_id] = { invite_state: { events: stripped } };
        else response.rooms.knock[m.room_id] = { knock_state: { events: stripped } };
      } else if (m.forgotten && !(since !== undefined && changedSince)) {
        // A forgotten room is gone from sync, except for the leave itself in the first
        // incremental sync after it: other devices learn the room was left.
      } else if ((since !== undefined && changedSince) || (since === undefined && filter.includeLeave)) {
        response.rooms.leave[m.room_id] = await this.leftRoom(
          session,
          m.room_id,
          m.stream_ordering,
          from,
          filter,
          m.event_id,
        );
      }
    }
    if (this.e2ee) await this.addE2ee(session, since, from, upTo, window, joinedIds, response);
    return { response, roomIds: new Set(memberships.map((m) => m.room_id)) };
  }

  /**
   * The end-to-end encryption parts: to-device messages for this device (and the
   * acknowledgement of those the since token proves delivered), device list changes of users
   * sharing a room, and this device's one-time key counts and unused fallback key types.
   */
  private async addE2ee(
    session: Session,
    since: SyncToken | undefined,
    from: number,
    upTo: number,
    window: ChangeWindow | undefined,
    joinedIds: string[],
    response: SyncResponse,
  ): Promise<void> {
    const { keys, toDevice } = this.e2ee!;
    const { userId, deviceId } = session;
    const device = `${userId}\u0000${deviceId}`;

    if (since !== undefined) {
      // A since token proves the client has everything up to it, so what was delivered up to
      // there can go. Deleting costs a write: it is done when this process delivered messages
      // the token now covers, on the device's first sync here, and at least once a minute.
      const last = this.toDeviceAcks.get(device);
      const covered = last !== undefined && last.upTo > 0 && last.upTo <= since.position;
      if (covered || last === undefined || this.now() - last.at > 60_000) {
        await toDevice.acknowledge(userId, deviceId, since.position);
        this.toDeviceAcks.set(device, { at: this.now(), upTo: 0 });
      }
    }
    if (!window || window.concernsUser(userId, 'to_device')) {
      response.to_device.events = await toDevice.messagesFor(userId, deviceId, since ? from : 0, upTo);
      if (response.to_device.events.length > 0) this.toDeviceAcks.set(device, { at: this.now(), upTo });
    }

    if (since !== undefined) {
      const joined = new Set(joinedIds);
      const membershipMoved =
        !window ||
        [...window.changes()].some(
          (c) =>
            c.kind === 'event' &&
            (c.userIds?.length ?? 0) > 0 &&
            ((c.roomId !== undefined && joined.has(c.roomId)) || c.userIds!.includes(userId)),
        );
      if (membershipMoved || window?.concernsUser(userId, 'device_list')) {
        response.device_lists = await keys.deviceListChanges(userId, from, upTo);
      }
    }

    let counts = this.keyCountCache.get(userId)?.get(deviceId);
    if (!counts) {
      const epoch = this.keyEpochs.get(userId) ?? 0;
      counts = {
        counts: await keys.oneTimeKeyCounts(userId, deviceId),
        fallback: await keys.unusedFallbackKeyTypes(userId, deviceId),
      };
      if ((this.keyEpochs.get(userId) ?? 0) === epoch) {
        if (this.keyCountCache.size >= 100_000) this.keyCountCache.clear();
        let devices = this.keyCountCache.get(userId);
        if (!devices) {
          devices = new Map();
          this.keyCountCache.set(userId, devices);
        }
        devices.set(deviceId, counts);
      }
    }
    response.device_one_time_keys_count = counts.counts;
    response.device_unused_fallback_key_types = counts.fallback;
  }

  private async joinedRoom(
    session: Session,
    roomId: string,
    opts: {
      from: number;
      upTo: number;
      initial: boolean;
      filter: SyncFilter;
      typingChanged: boolean;
      /** What changed in (from, upTo], when the change cache knows. */
      window: ChangeWindow | undefined;
    },
  ): Promise<JsonObject | undefined> {
    const limit = opts.filter.timelineLimit;
    const lower = opts.initial ? 0 : opts.from;
    const { events: timelineRows, limited } = await this.timeline(
      session.userId,
      roomId,
      lower,
      opts.upTo,
      limit,
      opts.filter,
    );
    const viewer = { userId: session.userId, deviceId: session.deviceId };
    // An incremental sync serves events newer than `from`; what relates to them came after them,
    // so when the range is in memory it tells which of them have relations to bundle, and the
    // many syncs a new message wakes need no query for it.
    const relationCandidates = opts.initial
      ? undefined
      : this.relationTargetsBetween(roomId, lower, opts.upTo);
    const timeline = await this.reader.toClientMany(this.db, timelineRows, {
      now: this.now(),
      viewer,
      ...(relationCandidates ? { relationCandidates } : {}),
    });

    let stateRows: EventRow[] = [];
    const first = timelineRows[0];
    if (opts.initial) {
      // The state at the start of the timeline (or now, when the timeline is empty).
      const group = first ? first.state_group_before : await this.groupAt(roomId, opts.upTo);
      stateRows = await this.reader.stateEventsAt(this.db, group);
      if (opts.filter.lazyLoadMembers) {
        const senders = new Set(timelineRows.map((r) => r.sender).concat(session.userId));
        stateRows = stateRows.filter((r) => r.type !== 'm.room.member' || senders.has(r.state_key ?? ''));
      }
    } else if (limited) {
      // State that changed in the gap the client will not see (all of (from, upTo] when the
      // filter asks for no timeline events at all).
      const gap = await this.db
        .selectFrom('events')
        .select('event_id')
        .where('room_id', '=', roomId)
        .where('state_key', 'is not', null)
        .where('stream_ordering', '>', opts.from)
        .where('stream_ordering', first ? '<' : '<=', first ? first.stream_ordering : opts.upTo)
        .execute();
      const current = await this.reader.stateIdsAt(
        this.db,
        first ? first.state_group_before : await this.groupAt(roomId, opts.upTo),
      );
      const currentIds = new Set(current.values());
      const ids = gap.map((g) => g.event_id).filter((id) => currentIds.has(id));
      const rows = await this.reader.eventRows(this.db, ids);
      stateRows = ids.map((id) => rows.get(id)).filter((r): r is EventRow => r !== undefined);
    }
    const timelineIds = new Set(timelineRows.map((r) => r.event_id));
    stateRows = stateRows.filter((r) => !timelineIds.has(r.event_id));

    const ephemeral: JsonObject[] = [];
    if (opts.typingChanged) {
      ephemeral.push({ type: 'm.typing', content: { user_ids: this.typing.typingUsers(roomId) } });
    }
    const quiet = opts.initial ? undefined : opts.window;
    const receipts =
      quiet && !quiet.roomHas(roomId, 'receipt')
        ? undefined
        : await this.receipts(session.userId, roomId, opts.initial ? 0 : opts.from, opts.upTo);
    if (receipts) ephemeral.push(receipts);

    const roomData =
      quiet && !quiet.concernsUser(session.userId, 'account_data', roomId)
        ? []
        : await accountDataBetween(this.db, session.userId, roomId, opts.initial ? 0 : opts.from, opts.upTo);

    if (
      !opts.initial &&
      timeline.length === 0 &&
      stateRows.length === 0 &&
      roomData.length === 0 &&
      !receipts
    ) {
      const typingOnly = opts.typingChanged && ephemeral.length > 0;
      if (!typingOnly) return undefined;
    }
    const result: JsonObject = {
      timeline: {
        events: timeline as unknown as JsonObject[],
        limited,
        ...(first ? { prev_batch: `s${first.stream_ordering - 1}` } : { prev_batch: `s${opts.upTo}` }),
      },
      state: {
        events: (await this.reader.toClientMany(this.db, stateRows, {
          now: this.now(),
        })) as unknown as JsonObject[],
      },
      ephemeral: { events: ephemeral },
      account_data: { events: roomData.map((r) => ({ type: r.type, content: r.content })) },
      unread_notifications: await this.unreadCounts(session.userId, roomId, opts),
    };
    if (opts.filter.useStateAfter) {
      delete result.state;
      result.state_after = { events: await this.stateAfter(session, roomId, timelineRows, opts) };
    }
    if (
      opts.initial ||
      stateRows.some((r) => r.type === 'm.room.member') ||
      timelineRows.some((r) => r.type === 'm.room.member')
    ) {
      result.summary = await this.summary(session.userId, roomId, opts.upTo);
    }
    return result;
  }

  /**
   * Many syncs woken by the same event ask for the same rows at the same moment. What lies in a
   * range of committed positions never changes (but for redaction marks, re-read within a
   * second), so concurrent and recent identical reads share one query.
   */
  private readonly shared = new Map<string, { at: number; value: Promise<unknown> }>();

  private sharedRead<T>(key: string, read: () => Promise<T>): Promise<T> {
    const now = Date.now();
    const hit = this.shared.get(key);
    if (hit && now - hit.at < 1000) return hit.value as Promise<T>;
    const value = read();
    this.shared.set(key, { at: now, value });
    value.catch(() => this.shared.delete(key));
    if (this.shared.size > 10_000) {
      for (const [k, v] of this.shared) if (now - v.at >= 1000) this.shared.delete(k);
    }
    return value;
  }

  /**
   * Rows of recent events by stream position, as read from the database. Only an event's
   * redaction mark can change after it is written: a redaction announces its target (`redacts`),
   * whose row is then dropped, and a read that raced a redaction is not kept.
   */
  /**
   * Forgets cached event rows, memberships and unread counts: after a retention purge or a
   * room's deletion (src/services/retention), whose events must not be served from memory.
   */
  forgetCachedRows(): void {
    this.redactionEpoch++;
    this.recentRows.clear();
    this.recentPositions.clear();
    this.membershipCache.clear();
    this.unreadCache.clear();
  }

  private readonly recentRows = new Map<number, EventRow>();
  private readonly recentPositions = new Map<string, number>();
  private redactionEpoch = 0;

  private forgetRow(eventId: string): void {
    this.redactionEpoch++;
    const position = this.recentPositions.get(eventId);
    if (position === undefined) return;
    this.recentPositions.delete(eventId);
    this.recentRows.delete(position);
  }

  private rememberRows(rows: EventRow[]): void {
    for (const row of rows) {
      this.recentRows.set(row.stream_ordering, row);
      this.recentPositions.set(row.event_id, row.stream_ordering);
    }
    while (this.recentRows.size > RECENT_ROWS) {
      const [position, row] = this.recentRows.entries().next().value as [number, EventRow];
      this.recentRows.delete(position);
      this.recentPositions.delete(row.event_id);
    }
  }

  /**
   * The room's newest `limit` events in (lower, upper], newest first. When the change cache holds
   * the range and every event of the room in it was read before, no query is needed: many syncs
   * ask for the same new events, each from its own `since`.
   */
  private async eventsBetween(
    roomId: string,
    lower: number,
    upper: number,
    limit: number,
  ): Promise<EventRow[]> {
    const window = this.notifier.changes?.window(lower, upper);
    if (window) {
      const rows: EventRow[] = [];
      let complete = true;
      for (const [position, change] of window.newestFirst()) {
        if (change.kind !== 'event' || change.roomId !== roomId) continue;
        const row = this.recentRows.get(position);
        if (!row) {
          complete = false;
          break;
        }
        rows.push(row);
        if (rows.length >= limit) break;
      }
      if (complete) return rows;
    }
    return this.sharedRead(`ev|${roomId}|${lower}|${upper}|${limit}`, async () => {
      const epoch = this.redactionEpoch;
      const rows = await this.db
        .selectFrom('events')
        .selectAll()
        .where('room_id', '=', roomId)
        .where('stream_ordering', '>', lower)
        .where('stream_ordering', '<=', upper)
        .orderBy('stream_ordering', 'desc')
        .limit(limit)
        .execute();
      if (epoch === this.redactionEpoch) this.rememberRows(rows);
      return rows;
    });
  }

  /**
   * The events that events of the room in (lower, upper] relate to (`m.relates_to.event_id`),
   * when the change cache holds the range and every event of the room in it was read before;
   * undefined otherwise, or when the range is too long to scan.
   */
  private relationTargetsBetween(roomId: string, lower: number, upper: number): Set<string> | undefined {
    if (upper - lower > RELATION_SCAN_LIMIT) return undefined;
    const window = this.notifier.changes?.window(lower, upper);
    if (!window) return undefined;
    const targets = new Set<string>();
    for (const [position, change] of window.newestFirst()) {
      if (change.kind !== 'event' || change.roomId !== roomId) continue;
      const row = this.recentRows.get(position);
      if (!row) return undefined;
      const relation = relationOf(row.json.content);
      if (relation) targets.add(relation.parentId);
    }
    return targets;
  }

  /** The last `limit` visible events of the room in (lower, upper]. */
  private async timeline(
    userId: string,
    roomId: string,
    lower: number,
    upper: number,
    limit: number,
    filter: SyncFilter,
  ): Promise<{ events: EventRow[]; limited: boolean }> {
    const picked: EventRow[] = [];
    let cursor = upper;
    let limited = false;
    for (;;) {
      const batch = await this.eventsBetween(roomId, lower, cursor, Math.max(limit * 2, TIMELINE_BATCH));
      if (batch.length === 0) break;
      const visible = new Set(await this.reader.filterVisible(this.db, userId, batch));
      for (const row of batch) {
        cursor = row.stream_ordering - 1;
        if (!visible.has(row)) continue;
        if (
          filter.timelineMatches &&
          !filter.timelineMatches({
            type: row.type,
            sender: row.sender,
            room_id: row.room_id,
            content: row.json.content as JsonObject,
          })
        )
          continue;
        if (picked.length >= limit) {
          limited = true;
          break;
        }
        picked.push(row);
      }
      if (limited || batch.length < Math.max(limit * 2, TIMELINE_BATCH)) break;
    }
    return { events: picked.reverse(), limited };
  }

  /**
   * `state_after`: the room's state at the end of the timeline, all of it on an initial sync, else
   * what differs from its state at `from`.
   */
  private async stateAfter(
    session: Session,
    roomId: string,
    timelineRows: EventRow[],
    opts: { from: number; upTo: number; initial: boolean; filter: SyncFilter },
  ): Promise<JsonObject[]> {
    const end = await this.reader.stateIdsAt(this.db, await this.groupAt(roomId, opts.upTo));
    const startGroup = opts.initial
      ? undefined
      : await roomStore.stateGroupAtPosition(this.db, roomId, opts.from);
    const start = startGroup === undefined ? new Map() : await this.reader.stateIdsAt(this.db, startGroup);
    const ids = [...end].filter(([key, id]) => start.get(key) !== id).map(([, id]) => id);
    const rows = await this.reader.eventRows(this.db, ids);
    let picked = ids.map((id) => rows.get(id)).filter((r): r is EventRow => r !== undefined);
    if (opts.initial && opts.filter.lazyLoadMembers) {
      const senders = new Set(timelineRows.map((r) => r.sender).concat(session.userId));
      picked = picked.filter((r) => r.type !== 'm.room.member' || senders.has(r.state_key ?? ''));
    }
    return (await this.reader.toClientMany(this.db, picked, { now: this.now() })) as unknown as JsonObject[];
  }

  private async groupAt(roomId: string, position: number): Promise<number> {
    const group = await roomStore.stateGroupAtPosition(this.db, roomId, position);
    if (group === undefined) throw new Error(`room ${roomId} has no event at or before ${position}`);
    return group;
  }

  /** The room as a user who left sees it: the timeline up to their departure. */
  private async leftRoom(
    session: Session,
    roomId: string,
    leftAt: number,
    from: number,
    filter: SyncFilter,
    leaveEventId: string,
  ) {
    const { events, limited } = await this.timeline(
      session.userId,
      roomId,
      from,
      leftAt,
      filter.timelineLimit,
      filter,
    );
    // A leave stored out of band (a rejected or withdrawn invite, a withdrawn knock, in a room this
    // server is not in) is in no timeline of ours: the left room carries it, so the client learns
    // who ended the membership, and why.
    if (filter.timelineLimit > 0 && !events.some((e) => e.event_id === leaveEventId)) {
      const outOfBand = await this.db
        .selectFrom('room_stripped_state')
        .select('event_id')
        .where('event_id', '=', leaveEventId)
        .executeTakeFirst();
      const own = outOfBand && (await this.reader.eventRows(this.db, [leaveEventId])).get(leaveEventId);
      if (own) events.push(own);
    }
    // On an initial sync, the state before the timeline; with an empty timeline (a limit of 0,
    // or a filter that keeps nothing), the state the user left, their leave included. Never
    // what came after the leave. The state filter applies.
    const first = events[0];
    let stateRows: EventRow[] = [];
    if (from === 0) {
      const group = first
        ? first.state_group_before
        : await roomStore.stateGroupAtPosition(this.db, roomId, leftAt);
      if (group !== undefined) stateRows = await this.reader.stateEventsAt(this.db, group);
      const matches = filter.stateMatches;
      if (matches)
        stateRows = stateRows.filter((r) =>
          matches({
            type: r.type,
            sender: r.sender,
            room_id: r.room_id,
            content: r.json.content as JsonObject,
          }),
        );
    }
    const viewer = { userId: session.userId, deviceId: session.deviceId };
    return {
      timeline: {
        events: (await this.reader.toClientMany(this.db, events, {
          now: this.now(),
          viewer,
        })) as unknown as JsonObject[],
        limited,
        prev_batch: `s${(first?.stream_ordering ?? leftAt) - 1}`,
      },
      state: {
        events: (await this.reader.toClientMany(this.db, stateRows, {
          now: this.now(),
        })) as unknown as JsonObject[],
      },
      account_data: { events: [] },
    };
  }

  /** The users in the user's `m.ignored_user_list` account data. */
  private async ignoredUsers(userId: string): Promise<Set<string>> {
    const content = await getAccountData(this.db, userId, '', 'm.ignored_user_list');
    const list = content?.ignored_users;
    return new Set(list && typeof list === 'object' && !Array.isArray(list) ? Object.keys(list) : []);
  }

  /** Stripped state for invites and knocks: enough to show the room (server-server API: stripped state). */
  private async strippedState(membershipEventId: string): Promise<JsonObject[]> {
    const memberRow = (await this.reader.eventRows(this.db, [membershipEventId])).get(membershipEventId);
    if (!memberRow) return [];
    const stripped = (r: { type: string; state_key: string | null; sender: string; json: JsonObject }) => ({
      type: r.type,
      state_key: r.state_key ?? '',
      sender: r.sender,
      content: r.json.content as JsonObject,
    });
    // Out of band (a room we are not in): the stripped state the other server sent with it.
    const given = await this.db
      .selectFrom('room_stripped_state')
      .select('state')
      .where('event_id', '=', membershipEventId)
      .executeTakeFirst();
    if (given) {
      const others = given.state.filter(
        (e) => !(e.type === 'm.room.member' && e.state_key === memberRow.state_key),
      );
      return [...others, stripped(memberRow)];
    }
    const others = await this.reader.strippedStateAt(
      this.db,
      memberRow.state_group_before,
      memberRow.sender !== memberRow.state_key ? [memberRow.sender] : [],
    );
    return [...others, stripped(memberRow)];
  }

  /** m.receipt for the room: everyone's public receipts, and the user's own private ones. */
  private async receipts(
    userId: string,
    roomId: string,
    from: number,
    upTo: number,
  ): Promise<JsonObject | undefined> {
    const rows = await this.db
      .selectFrom('receipts')
      .selectAll()
      .where('room_id', '=', roomId)
      .where('stream_ordering', '>', from)
      .where('stream_ordering', '<=', upTo)
      .execute();
    const content: Record<string, Record<string, Record<string, JsonObject>>> = {};
    for (const r of rows) {
      if (r.receipt_type === 'm.read.private' && r.user_id !== userId) continue;
      content[r.event_id] ??= {};
      const byType = content[r.event_id]!;
      byType[r.receipt_type] ??= {};
      byType[r.receipt_type]![r.user_id] = {
        ts: r.ts,
        ...(r.thread_id !== 'main' ? { thread_id: r.thread_id } : {}),
      };
    }
    if (Object.keys(content).length === 0) return undefined;
    return { type: 'm.receipt', content: content as unknown as JsonObject };
  }

  /** Whether the user was joined at `from` and every membership change since kept them joined. */
  private async joinedThroughout(
    roomId: string,
    userId: string,
    from: number,
    upTo: number,
  ): Promise<boolean> {
    const changes = await this.db
      .selectFrom('events')
      .select(['membership', 'state_group_before'])
      .where('room_id', '=', roomId)
      .where('type', '=', 'm.room.member')
      .where('state_key', '=', userId)
      .where('stream_ordering', '>', from)
      .where('stream_ordering', '<=', upTo)
      .orderBy('stream_ordering')
      .execute();
    const first = changes[0];
    if (!first || changes.some((c) => c.membership !== 'join')) return false;
    const before = await this.reader.stateEventAt(this.db, first.state_group_before, 'm.room.member', userId);
    return before?.membership === 'join';
  }

  /** changedRooms from the change cache, without a query. */
  private changedRoomsIn(window: ChangeWindow, userId: string, roomIds: string[]): Set<string> {
    const joined = new Set(roomIds);
    const out = new Set<string>();
    for (const c of window.changes()) {
      if (c.roomId === undefined || !joined.has(c.roomId)) continue;
      if (c.kind === 'event' || c.kind === 'receipt') out.add(c.roomId);
      else if (c.kind === 'account_data' && c.userIds?.includes(userId)) out.add(c.roomId);
    }
    return out;
  }

  /**
   * The user's memberships as of `upTo`. An incremental sync reuses the last read when the change
   * cache shows no membership change of the user since (every membership change announces its
   * target user), so a woken sync does not read them again.
   */
  private async memberships(userId: string, upTo: number, mayReuse: boolean): Promise<MembershipRow[]> {
    const known = this.membershipCache.get(userId);
    if (mayReuse && known && known.at <= upTo) {
      const window = this.notifier.changes?.window(known.at, upTo);
      if (window && !window.concernsUser(userId, 'event')) {
        // Still right at upTo: the next check need only look past it.
        known.at = upTo;
        return known.rows;
      }
    }
    const rows = await this.db
      .selectFrom('memberships')
      .selectAll()
      .where('user_id', '=', userId)
      .where('stream_ordering', '<=', upTo)
      .execute();
    if (this.membershipCache.size >= 100_000) this.membershipCache.clear();
    this.membershipCache.set(userId, { at: upTo, rows });
    return rows;
  }

  /** Joined rooms with events, receipts or room account data in (from, upTo]. */
  private async changedRooms(
    userId: string,
    roomIds: string[],
    from: number,
    upTo: number,
  ): Promise<Set<string>> {
    if (roomIds.length === 0) return new Set();
    const rows = await sql<{ room_id: string }>`
      select distinct room_id from events
        where room_id in (${sql.join(roomIds)}) and stream_ordering > ${from} and stream_ordering <= ${upTo}
      union
      select distinct room_id from receipts
        where room_id in (${sql.join(roomIds)}) and stream_ordering > ${from} and stream_ordering <= ${upTo}
      union
      select distinct room_id from account_data
        where user_id = ${userId} and room_id in (${sql.join(roomIds)}) and stream_id > ${from} and stream_id <= ${upTo}
    `.execute(this.db);
    return new Set(rows.rows.map((r) => r.room_id));
  }

  /**
   * Messages from others after the user's latest read receipt; highlights are those that mention
   * the user. When the counts at `from` are known and (from, upTo] holds only new events (no
   * receipt of the user, no redaction, no change of the user's membership), the new events are
   * added to them; else they are counted in SQL.
   */
  private async unreadCounts(
    userId: string,
    roomId: string,
    opts: { from: number; upTo: number; initial: boolean; window: ChangeWindow | undefined },
  ) {
    const key = `${userId}\u0000${roomId}`;
    const known = this.unreadCache.get(key);
    const window =
      known === undefined || opts.initial || known.at > opts.upTo
        ? undefined
        : known.at === opts.from
          ? opts.window
          : this.notifier.changes?.window(known.at, opts.upTo);
    if (
      known &&
      window &&
      !window.concernsUser(userId, 'receipt', roomId) &&
      !window.concernsUser(userId, 'event')
    ) {
      const added = await this.completeRange(roomId, known.at, opts.upTo);
      if (added && !added.some((r) => r.type === 'm.room.redaction')) {
        const counts = { ...known.counts };
        for (const r of added) {
          if (!countsAsUnread(r, userId)) continue;
          counts.notification_count++;
          if (mentions(r, userId)) counts.highlight_count++;
        }
        this.rememberUnread(key, opts.upTo, counts);
        return counts;
      }
    }
    const counts = await this.unreadCountsFromDb(userId, roomId, opts.upTo);
    this.rememberUnread(key, opts.upTo, counts);
    return counts;
  }

  private rememberUnread(
    key: string,
    at: number,
    counts: { notification_count: number; highlight_count: number },
  ) {
    if (this.unreadCache.size >= 100_000) this.unreadCache.clear();
    this.unreadCache.set(key, { at, counts });
  }

  /**
   * All events of the room in (from, upTo] when there are few (the same shared read the timeline
   * starts with), else undefined.
   */
  private async completeRange(roomId: string, from: number, upTo: number): Promise<EventRow[] | undefined> {
    const rows = await this.eventsBetween(roomId, from, upTo, TIMELINE_BATCH);
    return rows.length < TIMELINE_BATCH ? rows : undefined;
  }

  private async unreadCountsFromDb(userId: string, roomId: string, upTo: number) {
    // Counted in SQL from the later of the user's read receipt and their latest join: everything
    // after their join is visible to them while they stay joined.
    const row = await sql<{ notifications: number; highlights: number }>`
      with mark as (
        select greatest(
          coalesce((select max(e.stream_ordering) from receipts r join events e on e.event_id = r.event_id
                    where r.room_id = ${roomId} and r.user_id = ${userId}), 0),
          coalesce((select stream_ordering from memberships where room_id = ${roomId} and user_id = ${userId}), 0)
        ) as pos
      )
      select count(*) as notifications,
             count(*) filter (where (json->'content'->'m.mentions'->'user_ids') ? ${userId}) as highlights
      from events, mark
      where room_id = ${roomId} and stream_ordering > mark.pos and stream_ordering <= ${upTo}
        and sender <> ${userId} and type in ('m.room.message', 'm.room.encrypted') and redacted_by is null
    `.execute(this.db);
    const r = row.rows[0];
    return { notification_count: Number(r?.notifications ?? 0), highlight_count: Number(r?.highlights ?? 0) };
  }

  private async summary(userId: string, roomId: string, upTo: number): Promise<JsonObject> {
    const group = await this.groupAt(roomId, upTo);
    const members = await this.reader.stateEventsAt(this.db, group, (k) =>
      k.startsWith('m.room.member\u0000'),
    );
    const joined = members.filter((m) => m.membership === 'join');
    const invited = members.filter((m) => m.membership === 'invite');
    const heroes = [...joined, ...invited]
      .map((m) => m.state_key!)
      .filter((u) => u !== userId)
      .sort()
      .slice(0, 5);
    return {
      'm.joined_member_count': joined.length,
      'm.invited_member_count': invited.length,
      'm.heroes': heroes,
    };
  }
}

const UNREAD_TYPES = new Set(['m.room.message', 'm.room.encrypted']);

function countsAsUnread(row: EventRow, userId: string): boolean {
  return row.sender !== userId && UNREAD_TYPES.has(row.type) && row.redacted_by === null;
}

function mentions(row: EventRow, userId: string): boolean {
  const m = (row.json.content as Record<string, unknown>)['m.mentions'];
  const ids = typeof m === 'object' && m !== null ? (m as Record<string, unknown>).user_ids : undefined;
  return Array.isArray(ids) && ids.includes(userId);
}

/** True when a sync response carries nothing new (what makes /sync keep waiting). */
export function isEmptySync(r: SyncResponse): boolean {
  return (
    Object.keys(r.rooms.join).length === 0 &&
    Object.keys(r.rooms.invite).length === 0 &&
    Object.keys(r.rooms.leave).length === 0 &&
    Object.keys(r.rooms.knock).length === 0 &&
    r.account_data.events.length === 0 &&
    r.presence.events.length === 0 &&
    r.to_device.events.length === 0 &&
    r.device_lists.changed.length === 0 &&
    r.device_lists.left.length === 0
  );
}

export type { ClientEvent };
