import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { Config } from '../config.ts';
import { errors, MatrixError } from '../errors.ts';
import { checkAuth, selectAuthEvents } from '../protocol/auth-rules.ts';
import { CanonicalJsonError, canonicalJson, canonicalJsonBytes } from '../protocol/canonical-json.ts';
import { type Pdu, type RoomEvent, type StateMap, stateTuple } from '../protocol/event.ts';
import { hashAndSignEvent, verifyEventSignature } from '../protocol/event-signing.ts';
import { computeEventId, roomIdFromCreateEvent } from '../protocol/hashes.ts';
import type { JsonObject } from '../protocol/json.ts';
import { getRoomVersion, type RoomVersion } from '../protocol/room-versions.ts';
import type { Executor } from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';
import * as rooms from '../storage/rooms.repository.ts';
import type { Notifier, StreamChange } from '../streams/notifier.ts';
import { nextPosition } from '../streams/positions.ts';
import { encryptionChangeRefusal } from './room-encryption.ts';
import type { RoomReader } from './room-reads.ts';
import type { ServerKeysService } from './server-keys.service.ts';

/** Largest event, as the spec limits PDUs: 65,536 bytes of canonical JSON. */
export const MAX_EVENT_BYTES = 65_536;

export interface NewEvent {
  roomId: string;
  type: string;
  sender: string;
  content: JsonObject;
  stateKey?: string;
  /** For m.room.redaction: the event redacted. */
  redacts?: string;
  /** Idempotency: a retried (device, txnId) returns the first event. */
  txn?: { deviceId: string; txnId: string };
}

export interface PersistedEvent {
  event: RoomEvent;
  streamOrdering: number;
  /** True when a retried transaction ID returned an event stored earlier. */
  deduplicated?: boolean;
}

/**
 * The event pipeline: builds, authorises, signs and persists every event of a room, one room at
 * a time (an in-process queue plus a database advisory lock for other processes), then notifies.
 * Events from other servers will enter through `persist` once federation lands, so both paths
 * share the checks and the storage steps.
 */
export class EventsService {
  private readonly roomQueues = new Map<string, Promise<unknown>>();

  constructor(
    private readonly db: Db,
    private readonly config: Config,
    private readonly serverKeys: ServerKeysService,
    private readonly notifier: Notifier,
    private readonly reader: RoomReader,
    private readonly now: () => number = Date.now,
  ) {}

  /** Announces a room change that did not go through the pipeline (e.g. forgetting a room). */
  announce(change: StreamChange): Promise<void> {
    return this.notifier.notify(change);
  }

  /** Runs `fn` holding the room's lock: one writer per room in this process and across processes. */
  async withRoomLock<T>(roomId: string, fn: (trx: Executor) => Promise<T>): Promise<T> {
    const previous = this.roomQueues.get(roomId) ?? Promise.resolve();
    const run = previous
      .catch(() => {})
      .then(() =>
        this.db.transaction().execute(async (trx) => {
          await sql`select pg_advisory_xact_lock(hashtext(${roomId}))`.execute(trx);
          return fn(trx);
        }),
      );
    this.roomQueues.set(roomId, run);
    try {
      return await run;
    } finally {
      if (this.roomQueues.get(roomId) === run) this.roomQueues.delete(roomId);
    }
  }

  /**
   * Creates a room: its m.room.create event, from which (in v12) the room ID derives, then what
   * `initial` sends, all in one transaction: if any of it is refused, no room is left behind.
   */
  async createRoom(
    creator: string,
    roomVersionId: string,
    extraContent: JsonObject,
    initial?: (ctx: {
      roomId: string;
      trx: Executor;
      send: (input: Omit<NewEvent, 'roomId'>) => Promise<PersistedEvent>;
    }) => Promise<void>,
  ): Promise<PersistedEvent> {
    const rv = getRoomVersion(roomVersionId);
    if (!rv)
      throw new MatrixError(
        400,
        'M_UNSUPPORTED_ROOM_VERSION',
        `Room version ${roomVersionId} is not supported`,
      );
    assertCanonical(extraContent);
    const content: JsonObject = { ...extraContent, room_version: rv.id };
    if (!rv.updatedRedactionRules) content.creator = creator;
    const base: Omit<Pdu, 'hashes' | 'signatures'> = {
      type: 'm.room.create',
      sender: creator,
      state_key: '',
      content,
      origin_server_ts: this.now(),
      depth: 1,
      prev_events: [],
      auth_events: [],
    };
    let pdu: Pdu;
    let roomId: string;
    if (rv.roomIdFromCreateEvent) {
      pdu = this.sign(base, rv);
      roomId = roomIdFromCreateEvent(pdu, rv);
    } else {
      roomId = `!${randomBytes(12).toString('base64url').replace(/[-_]/g, 'x')}:${this.config.serverName}`;
      pdu = this.sign({ ...base, room_id: roomId }, rv);
    }
    const eventId = computeEventId(pdu, rv);
    const event: RoomEvent = { ...pdu, event_id: eventId };
    const verdict = checkAuth(event, new Map(), rv);
    if (!verdict.allowed) throw errors.forbidden(`${verdict.reason} (rule ${verdict.rule})`);
    const changes: StreamChange[] = [];
    const created = await this.withRoomLock(roomId, async (trx) => {
      await rooms.insertRoom(trx, { room_id: roomId, room_version: rv.id, creator, created_ts: this.now() });
      const persisted = await this.persist(trx, rv, roomId, event, { stateBefore: null });
      changes.push({ kind: 'event', position: persisted.streamOrdering, roomId, userIds: [creator] });
      if (initial) {
        await initial({
          roomId,
          trx,
          send: async (input) => {
            const sent = await this.sendIn(trx, { ...input, roomId });
            if (!sent.deduplicated) changes.push(eventChange({ ...input, roomId }, sent));
            return sent;
          },
        });
      }
      return persisted;
    });
    // Announced after the commit, every position in order (the change caches need each one).
    for (const change of changes) await this.notifier.notify(change);
    return created;
  }

  /** Builds, authorises against the current state, signs and persists one event. */
  async send(input: NewEvent): Promise<PersistedEvent> {
    const result = await this.withRoomLock(input.roomId, (trx) => this.sendIn(trx, input));
    if (!result.deduplicated) await this.notifier.notify(eventChange(input, result));
    return result;
  }

  /** `send` within a transaction that holds the room's lock; the caller announces the change. */
  private async sendIn(trx: Executor, input: NewEvent): Promise<PersistedEvent> {
    assertCanonical(input.content);
    if (input.txn) {
      const earlier = await trx
        .selectFrom('event_txns')
        .innerJoin('events', 'events.event_id', 'event_txns.event_id')
        .select(['events.event_id', 'events.json', 'events.stream_ordering'])
        .where('event_txns.user_id', '=', input.sender)
        .where('event_txns.device_id', '=', input.txn.deviceId)
        .where('event_txns.room_id', '=', input.roomId)
        .where('event_txns.txn_id', '=', input.txn.txnId)
        .executeTakeFirst();
      if (earlier) {
        return {
          event: rooms.toRoomEvent(earlier),
          streamOrdering: earlier.stream_ordering,
          deduplicated: true,
        };
      }
    }
    const version = await this.reader.roomVersionOf(trx, input.roomId);
    if (version === undefined) throw errors.notFound('Unknown room');
    const rv = getRoomVersion(version)!;
    const prevRows = await rooms.forwardExtremityRows(trx, input.roomId);
    if (prevRows.length === 0) throw errors.notFound('Unknown room');
    const latest = prevRows.reduce((a, b) => (a.stream_ordering > b.stream_ordering ? a : b));
    const stateIds = await this.reader.stateIdsAt(trx, latest.state_group_after);

    const partial = {
      type: input.type,
      sender: input.sender,
      content: input.content,
      ...(input.stateKey !== undefined ? { state_key: input.stateKey } : {}),
    };
    const authKeys = selectAuthEvents(partial, rv).map((k) => stateTuple(k.type, k.state_key));
    // The state the rules read: the selected auth events, plus the create event in every version.
    const wanted = new Set([...authKeys, stateTuple('m.room.create', '')]);
    const authState: StateMap = new Map();
    const wantedIds = [...wanted].map((k) => stateIds.get(k)).filter((id): id is string => id !== undefined);
    // Auth-relevant content survives redaction, so cached rows serve.
    for (const row of (await this.reader.eventRows(trx, wantedIds, true)).values()) {
      const ev = rooms.toRoomEvent(row);
      authState.set(stateTuple(ev.type, ev.state_key ?? ''), ev);
    }
    const authEventIds = authKeys.map((k) => stateIds.get(k)).filter((id): id is string => id !== undefined);

    const content = { ...input.content };
    const unsignedPdu: Omit<Pdu, 'hashes' | 'signatures'> = {
      type: input.type,
      room_id: input.roomId,
      sender: input.sender,
      content,
      origin_server_ts: this.now(),
      depth: Math.max(...prevRows.map((r) => r.depth)) + 1,
      prev_events: prevRows.map((r) => r.event_id),
      auth_events: authEventIds,
      ...(input.stateKey !== undefined ? { state_key: input.stateKey } : {}),
    };
    if (input.redacts !== undefined) {
      if (rv.redactsInContent) content.redacts = input.redacts;
      else unsignedPdu.redacts = input.redacts;
    }
    const pdu = this.sign(unsignedPdu, rv);
    if (canonicalJsonBytes(pdu).length > MAX_EVENT_BYTES) {
      throw errors.tooLarge(`Events may not exceed ${MAX_EVENT_BYTES} bytes`);
    }
    const event: RoomEvent = { ...pdu, event_id: computeEventId(pdu, rv) };
    const verdict = checkAuth(event, authState, rv, {
      verifyEventSignature: (ev, serverName) => this.verifyOwnSignature(ev, rv, serverName),
    });
    if (!verdict.allowed) throw errors.forbidden(`${verdict.reason} (rule ${verdict.rule})`);
    if (input.type === 'm.room.encryption' && input.stateKey === '') {
      // Checked under the room's lock, so two concurrent changes cannot both pass, and after
      // the auth rules, so a sender who may not send it at all learns nothing about the room.
      const currentId = stateIds.get(stateTuple('m.room.encryption', ''));
      // The stored JSON is the original content even after a redaction: the room stays
      // encrypted with the algorithm it had.
      const current =
        currentId === undefined
          ? undefined
          : (await this.reader.eventRows(trx, [currentId], true)).get(currentId);
      const refusal = encryptionChangeRefusal(current?.json.content as JsonObject | undefined, input.content);
      if (refusal !== undefined) throw errors.forbidden(refusal);
    }

    const chainLength = await this.reader.chainLengthOf(trx, latest.state_group_after);
    const persisted = await this.persist(trx, rv, input.roomId, event, {
      stateBefore: { id: latest.state_group_after, chainLength, state: stateIds },
    });
    if (input.txn) {
      await trx
        .insertInto('event_txns')
        .values({
          user_id: input.sender,
          device_id: input.txn.deviceId,
          room_id: input.roomId,
          txn_id: input.txn.txnId,
          event_id: event.event_id,
          created_ts: this.now(),
        })
        .execute();
    }
    return persisted;
  }

  /**
   * The storage steps every event goes through: a stream position, the state group after it, the
   * event row, current state, membership and forward extremities, and redaction marks.
   */
  private async persist(
    trx: Executor,
    rv: RoomVersion,
    roomId: string,
    event: RoomEvent,
    opts: { stateBefore: { id: number; chainLength: number; state: rooms.StateIds } | null },
  ): Promise<PersistedEvent> {
    const isState = typeof event.state_key === 'string';
    let groupBefore: number;
    let groupAfter: number;
    if (opts.stateBefore === null) {
      // The create event: the state before it is empty.
      groupBefore = (await rooms.createStateGroup(trx, roomId, null, [])).id;
    } else {
      groupBefore = opts.stateBefore.id;
    }
    if (isState) {
      const prev = opts.stateBefore ?? {
        id: groupBefore,
        chainLength: 0,
        state: new Map() as rooms.StateIds,
      };
      groupAfter = (
        await rooms.createStateGroup(trx, roomId, prev, [
          { type: event.type, state_key: event.state_key!, event_id: event.event_id },
        ])
      ).id;
    } else {
      groupAfter = groupBefore;
    }
    const position = await nextPosition(trx);
    const membership =
      event.type === 'm.room.member' && typeof event.content.membership === 'string'
        ? event.content.membership
        : null;
    const { event_id: _omit, ...json } = event;
    await rooms.insertEvent(trx, {
      stream_ordering: position,
      event_id: event.event_id,
      room_id: roomId,
      type: event.type,
      state_key: event.state_key ?? null,
      sender: event.sender,
      membership,
      depth: event.depth,
      origin_server_ts: event.origin_server_ts,
      state_group_before: groupBefore,
      state_group_after: groupAfter,
      json: json as unknown as JsonObject,
    });
    if (isState) {
      await rooms.setCurrentState(trx, roomId, event.type, event.state_key!, event.event_id);
      if (membership !== null) {
        await rooms.setMembership(trx, {
          room_id: roomId,
          user_id: event.state_key!,
          membership,
          event_id: event.event_id,
          stream_ordering: position,
        });
      }
    }
    await rooms.replaceForwardExtremities(trx, roomId, event.event_id);
    if (event.type === 'm.room.redaction') {
      const target = rv.redactsInContent ? event.content.redacts : event.redacts;
      if (typeof target === 'string') await this.applyRedaction(trx, roomId, event, target);
    }
    return { event, streamOrdering: position };
  }

  /**
   * Marks the target redacted when the redaction is allowed to take effect: the sender sent the
   * target, or has the redact power level (client-server API: Redactions; rooms: Handling
   * redactions). The target must be in the same room.
   */
  private async applyRedaction(trx: Executor, roomId: string, redaction: RoomEvent, targetId: string) {
    const target = await rooms.getEventRow(trx, targetId);
    if (!target || target.room_id !== roomId) return;
    await trx
      .updateTable('events')
      .set({ redacted_by: redaction.event_id })
      .where('event_id', '=', targetId)
      .execute();
  }

  private sign(pdu: Omit<Pdu, 'hashes' | 'signatures'>, rv: RoomVersion): Pdu {
    const key = this.serverKeys.key;
    return hashAndSignEvent(pdu, rv, this.config.serverName, key.keyId, key.seed) as Pdu;
  }

  private verifyOwnSignature(event: Pdu, rv: RoomVersion, serverName: string): boolean {
    if (serverName !== this.config.serverName) return false; // no federation yet
    const key = this.serverKeys.key;
    return verifyEventSignature(event, rv, serverName, key.keyId, key.publicKey);
  }
}

/** The announcement of a persisted event: its room, and the member it concerns, if any. */
function eventChange(input: NewEvent, persisted: PersistedEvent): StreamChange {
  const target = input.type === 'm.room.member' && input.stateKey ? [input.stateKey] : [];
  const redacts =
    input.type === 'm.room.redaction'
      ? (input.redacts ?? (typeof input.content.redacts === 'string' ? input.content.redacts : undefined))
      : undefined;
  return {
    kind: 'event',
    position: persisted.streamOrdering,
    roomId: input.roomId,
    userIds: target,
    ...(redacts !== undefined ? { redacts } : {}),
  };
}

/** Event content must be canonical JSON (no floats, integers within ±(2^53-1)): else M_BAD_JSON. */
function assertCanonical(content: JsonObject): void {
  try {
    canonicalJson(content);
  } catch (err) {
    if (err instanceof CanonicalJsonError)
      throw errors.badJson(`Event content is not canonical JSON: ${err.message}`);
    throw err;
  }
}
