import { randomBytes } from 'node:crypto';
import type { Config } from '../config.ts';
import { errors, MatrixError } from '../errors.ts';
import { CanonicalJsonError, canonicalJson } from '../protocol/canonical-json.ts';
import type { Pdu, RoomEvent } from '../protocol/event.ts';
import { hashAndSignEvent } from '../protocol/event-signing.ts';
import { computeEventId, roomIdFromCreateEvent } from '../protocol/hashes.ts';
import type { JsonObject } from '../protocol/json.ts';
import { getRoomVersion, type RoomVersion } from '../protocol/room-versions.ts';
import { resolveState } from '../protocol/state-res/index.ts';
import type { RoomReader } from '../services/room-reads.ts';
import type { ServerKeysService } from '../services/server-keys.service.ts';
import type { Db } from '../storage/connect.ts';
import * as rooms from '../storage/rooms.repository.ts';
import type { Notifier, StreamChange } from '../streams/notifier.ts';
import { type BuiltEvent, buildEvent, type NewEvent, newLegacyEventId, precheck } from './build.ts';
import { OwnKeyVerifier } from './local-verifier.ts';
import {
  type EventInput,
  EventPipeline,
  type EventSignatureVerifier,
  type IngestOutcome,
} from './pipeline.ts';
import { type RoomLock, RoomLocks } from './room-lock.ts';
import type { StateResolver } from './state.ts';

export type { NewEvent } from './build.ts';
export { MAX_EVENT_BYTES } from './checks.ts';

export interface PersistedEvent {
  event: RoomEvent;
  streamOrdering: number;
  /** True when a retried transaction ID returned an event stored earlier. */
  deduplicated?: boolean;
}

/** A client-facing check of a built event, run under the room's lock (see RoomTransaction.send). */
export type EventCheck = (built: BuiltEvent, lock: RoomLock) => Promise<void>;

/** What a function run under a room's lock may do: send events, whose changes are announced after commit. */
export interface RoomTransaction {
  lock: RoomLock;
  /**
   * Builds, checks and persists one local event. `check` runs after the auth rules allowed the
   * event and before it is stored: client-facing rules (e.g. the encryption downgrade rule) that
   * must not reveal anything to a sender the rules refuse.
   */
  send(input: Omit<NewEvent, 'roomId'>, check?: EventCheck): Promise<PersistedEvent>;
}

/**
 * Rooms' events: the facade the services use. Local sends are built here and go through the same
 * pipeline (src/events/pipeline.ts) as events from other servers; changes are announced once the
 * room's transaction committed.
 */
/** Where local events go to reach other servers (the federation sender). */
export interface Outbox {
  /** In the event's transaction: records who must get it; returns those destinations. */
  enqueue(
    lock: RoomLock,
    event: RoomEvent,
    position: number,
    opts?: {
      /** The server the event came from, which need not get it back. */
      except?: string;
      /** The room's current state group after the event, when known (it names who is joined). */
      stateGroup?: number;
    },
  ): Promise<string[]>;
  /** After the commit: start sending to them. */
  wake(destination: string): void;
}

export class EventsService {
  readonly locks: RoomLocks;
  readonly pipeline: EventPipeline;
  private outbox: Outbox | undefined;
  /** Destinations owed events by transactions still open, by lock. */
  private readonly owed = new WeakMap<RoomLock, Set<string>>();

  constructor(
    readonly db: Db,
    private readonly config: Config,
    private readonly serverKeys: ServerKeysService,
    private readonly notifier: Notifier,
    private readonly reader: RoomReader,
    private readonly resolver: StateResolver = resolveState,
    verifier: EventSignatureVerifier = new OwnKeyVerifier(serverKeys),
    private readonly now: () => number = Date.now,
  ) {
    // PostgreSQL may be shared by several processes; PGlite (no URL) belongs to this one.
    this.locks = new RoomLocks(db, config.databaseUrl !== '');
    this.pipeline = new EventPipeline({
      serverName: config.serverName,
      reader,
      resolver,
      verifier,
      now,
    });
  }

  /** Local events are handed to `outbox` from now on (set once federation is built). */
  setOutbox(outbox: Outbox): void {
    this.outbox = outbox;
  }

  /**
   * Passes on an event a remote server handed us as the room's resident server (a membership
   * through send_join, send_leave or send_knock) to the room's other servers, but `except`.
   */
  async forward(roomId: string, event: RoomEvent, position: number, except: string): Promise<void> {
    const outbox = this.outbox;
    if (!outbox) return;
    const destinations = await this.locks.withRoomLock(roomId, (lock) =>
      outbox.enqueue(lock, event, position, { except }),
    );
    for (const d of destinations) outbox.wake(d);
  }

  /** Announces a room change that did not go through the pipeline (e.g. forgetting a room). */
  announce(change: StreamChange): Promise<void> {
    return this.notifier.notify(change);
  }

  /** Runs `fn` holding the room's lock and announces what it persisted once it committed. */
  async transact<T>(roomId: string, fn: (tx: RoomTransaction) => Promise<T>): Promise<T> {
    return this.transactWith(roomId, (lock, rv, changes) =>
      fn({
        lock,
        send: async (input, check) => {
          const { persisted, change } = await this.sendIn(lock, rv, { ...input, roomId }, check);
          if (change) changes.push(change);
          return persisted;
        },
      }),
    );
  }

  private async transactWith<T>(
    roomId: string,
    fn: (lock: RoomLock, rv: RoomVersion, changes: StreamChange[]) => Promise<T>,
  ): Promise<T> {
    const changes: StreamChange[] = [];
    const owed = new Set<string>();
    const result = await this.locks.withRoomLock(roomId, async (lock) => {
      this.owed.set(lock, owed);
      return fn(lock, await this.versionOf(lock), changes);
    });
    for (const change of changes) await this.notifier.notify(change);
    for (const d of owed) this.outbox?.wake(d);
    return result;
  }

  /** Builds, authorises, signs and persists one event. */
  send(input: NewEvent, check?: EventCheck): Promise<PersistedEvent> {
    return this.transact(input.roomId, (tx) => tx.send(input, check));
  }

  /**
   * Events from elsewhere (other servers), under the room's lock: see EventPipeline.ingest. The
   * caller announces `change` of persisted outcomes after the transaction (see `announceOutcomes`).
   */
  async ingest(lock: RoomLock, input: EventInput): Promise<IngestOutcome> {
    return this.pipeline.ingest(lock, await this.versionOf(lock), input);
  }

  async announceOutcomes(outcomes: readonly IngestOutcome[]): Promise<void> {
    for (const o of outcomes) if (o.status === 'persisted' && o.change) await this.notifier.notify(o.change);
  }

  /**
   * Creates a room: its m.room.create event, from which (in v12) the room ID derives, then what
   * `initial` sends, all in one transaction: if any of it is refused, no room is left behind.
   */
  async createRoom(
    creator: string,
    roomVersionId: string,
    extraContent: JsonObject,
    initial?: (ctx: RoomTransaction & { roomId: string }) => Promise<void>,
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
    // Room versions 1 and 2: the event ID is ours to choose (the create event references none).
    if (rv.eventIdFormat === 'legacy')
      Object.assign(base, { event_id: newLegacyEventId(this.config.serverName) });
    let pdu: Pdu;
    let roomId: string;
    if (rv.roomIdFromCreateEvent) {
      pdu = this.sign(base, rv);
      roomId = roomIdFromCreateEvent(pdu, rv);
    } else {
      roomId = `!${randomBytes(12).toString('base64url').replace(/[-_]/g, 'x')}:${this.config.serverName}`;
      pdu = this.sign({ ...base, room_id: roomId }, rv);
    }
    const event: RoomEvent = { ...pdu, event_id: computeEventId(pdu, rv) };
    const changes: StreamChange[] = [];
    const owed = new Set<string>();
    const created = await this.locks.withRoomLock(roomId, async (lock) => {
      this.owed.set(lock, owed);
      await rooms.insertRoom(lock.trx, {
        room_id: roomId,
        room_version: rv.id,
        creator,
        created_ts: this.now(),
      });
      const outcome = await this.pipeline.ingest(lock, rv, {
        kind: 'new',
        origin: this.config.serverName,
        event,
      });
      const persisted = this.expectPersisted(outcome);
      changes.push({ ...persisted.change, userIds: [creator] });
      if (initial) {
        await initial({
          roomId,
          lock,
          send: async (input, check) => {
            const sent = await this.sendIn(lock, rv, { ...input, roomId }, check);
            if (sent.change) changes.push(sent.change);
            return sent.persisted;
          },
        });
      }
      return persisted.persisted;
    });
    // Announced after the commit, every position in order (the change caches need each one).
    for (const change of changes) await this.notifier.notify(change);
    for (const d of owed) this.outbox?.wake(d);
    return created;
  }

  private async sendIn(
    lock: RoomLock,
    rv: RoomVersion,
    input: NewEvent,
    check?: EventCheck,
  ): Promise<{ persisted: PersistedEvent; change: StreamChange | undefined }> {
    const built = await this.buildIn(lock, rv, input, check !== undefined);
    if (check) await check(built, lock);
    return this.persistIn(lock, rv, built.event);
  }

  private async buildIn(
    lock: RoomLock,
    rv: RoomVersion,
    input: NewEvent,
    checked: boolean,
  ): Promise<BuiltEvent> {
    assertCanonical(input.content);
    const built = await buildEvent(
      lock,
      { reader: this.reader, resolver: this.resolver, sign: (p, v) => this.sign(p, v), now: this.now },
      rv,
      input,
    );
    if (checked) await precheck(lock, this.reader, rv, built);
    return built;
  }

  /** Ingests an event built here, and marks who must get it. */
  private async persistIn(
    lock: RoomLock,
    rv: RoomVersion,
    event: RoomEvent,
  ): Promise<{ persisted: PersistedEvent; change: StreamChange | undefined }> {
    const outcome = await this.pipeline.ingest(lock, rv, {
      kind: 'new',
      origin: this.config.serverName,
      event,
    });
    const { persisted, change } = this.expectPersisted(outcome);
    const stateGroup = outcome.status === 'persisted' ? outcome.roomStateGroup : undefined;
    if (this.outbox) {
      const destinations = await this.outbox.enqueue(lock, persisted.event, persisted.streamOrdering, {
        stateGroup,
      });
      const owed = this.owed.get(lock);
      for (const d of destinations) owed?.add(d);
    }
    return { persisted, change };
  }

  /**
   * Builds, authorises and signs a local event without persisting it: for an invite that the
   * invitee's server must see first. `sendPrepared` persists it afterwards, through the pipeline
   * against the room as it is then.
   */
  async prepare(input: NewEvent): Promise<RoomEvent> {
    return this.locks.withRoomLock(input.roomId, async (lock) => {
      const built = await this.buildIn(lock, await this.versionOf(lock), input, true);
      return built.event;
    });
  }

  /** Persists an event `prepare` built, and announces it. */
  async sendPrepared(roomId: string, event: RoomEvent): Promise<PersistedEvent> {
    return this.transactWith(roomId, async (lock, rv, changes) => {
      const { persisted, change } = await this.persistIn(lock, rv, event);
      if (change) changes.push(change);
      return persisted;
    });
  }

  /** A local event the pipeline did not persist is refused to its sender with the reason. */
  private expectPersisted(outcome: IngestOutcome): { persisted: PersistedEvent; change: StreamChange } {
    switch (outcome.status) {
      case 'persisted':
        return {
          persisted: { event: outcome.event, streamOrdering: outcome.position },
          change: outcome.change ?? { kind: 'event', position: outcome.position },
        };
      case 'rejected':
      case 'soft_failed':
        throw errors.forbidden(outcome.reason);
      case 'dropped':
        throw errors.badJson(outcome.reason);
      default:
        throw new Error(`a local event was not persisted: ${outcome.status}`);
    }
  }

  private async versionOf(lock: RoomLock): Promise<RoomVersion> {
    const version = await this.reader.roomVersionOf(lock.trx, lock.roomId);
    if (version === undefined) throw errors.notFound('Unknown room');
    return getRoomVersion(version)!;
  }

  private sign(pdu: Omit<Pdu, 'hashes' | 'signatures'>, rv: RoomVersion): Pdu {
    const key = this.serverKeys.key;
    return hashAndSignEvent(pdu, rv, this.config.serverName, key.keyId, key.seed) as Pdu;
  }
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
