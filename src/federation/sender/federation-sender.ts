import { randomBytes } from 'node:crypto';
import type { RoomLock } from '../../events/room-lock.ts';
import type { RoomEvent } from '../../protocol/event.ts';
import type { JsonObject } from '../../protocol/json.ts';
import { getRoomVersion, type RoomVersion } from '../../protocol/room-versions.ts';
import type { Executor } from '../../storage/accounts.repository.ts';
import type { Db } from '../../storage/connect.ts';
import type { PduRow } from '../../storage/database.ts';
import * as store from '../../storage/events.repository.ts';
import * as outbox from '../../storage/federation.repository.ts';
import * as rooms from '../../storage/rooms.repository.ts';
import { currentPosition } from '../../streams/positions.ts';
import type { Requester } from '../inbound/fetch-missing.ts';
import { toWire } from '../pdu.ts';

export interface SenderOptions {
  /** First retry delay after a failure; doubled per failure up to `maxRetryMs`. */
  minRetryMs: number;
  maxRetryMs: number;
}

const JOINED_CACHE_LIMIT = 1_000;
/** Per transaction (server-server API: Transactions). */
const MAX_PDUS_PER_TXN = 50;
const MAX_EDUS_PER_TXN = 100;
/** How soon events held back behind a stream position in flight are tried again. */
const HELD_BACK_RETRY_MS = 100;
/** Ephemeral EDUs held for one destination at most; the oldest go first beyond it. */
const MAX_EPHEMERAL_PER_DESTINATION = 10_000;
/** How long an ephemeral EDU waits for a destination that is down, unless told otherwise. */
export const DEFAULT_EPHEMERAL_TTL_MS = 10 * 60 * 1000;

/** An EDU as it travels in a transaction. */
export interface Edu {
  edu_type: string;
  content: JsonObject;
}

export interface QueueEduOptions {
  /**
   * Persistent EDUs (to-device messages, device list updates) are stored and sent until the
   * destination acknowledges them, across outages and restarts. Ephemeral ones (typing,
   * receipts, presence) are held in this process's memory for `ttlMs` at most.
   */
  persistent?: boolean;
  /**
   * Ephemeral only: an EDU queued with the key of one still waiting replaces it (the latest
   * receipt of a user in a room, a user's latest presence).
   */
  key?: string;
  /** Ephemeral only: dropped when not sent within this time (default 10 minutes). */
  ttlMs?: number;
}

interface WaitingEdu {
  edu: Edu;
  expiresAt: number;
}

export const DEFAULT_SENDER_OPTIONS: SenderOptions = { minRetryMs: 1_000, maxRetryMs: 60 * 60 * 1000 };

/**
 * Outbound PDUs, one queue per destination. A local event marks, in its own transaction, every
 * destination that must get it (the servers of the room's joined users, and the target of a
 * membership change); the queue then sends the destination's pending events in stream order, 50
 * to a transaction, and moves its acknowledged position on success. On failure it backs off
 * exponentially; when the destination comes back (or this process restarts) it resumes from its
 * last acknowledged position, so nothing is lost and nothing is kept per PDU.
 */
export class FederationSender {
  private readonly running = new Map<string, Promise<void>>();
  private readonly again = new Set<string>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private stopped = false;
  /** Joined servers by the room's current state group (see joinedServers). */
  private readonly joinedByGroup = new Map<number, string[]>();
  /** Ephemeral EDUs by destination, by key, oldest first. */
  private readonly ephemeral = new Map<string, Map<string, WaitingEdu>>();
  private eduSerial = 0;
  /** Makes the IDs of transactions that carry EDUs unique to this process. */
  private readonly instance = randomBytes(6).toString('hex');
  private readonly versionOf = new Map<string, RoomVersion>();

  constructor(
    private readonly db: Db,
    private readonly serverName: string,
    private readonly requester: Requester,
    private readonly options: SenderOptions = DEFAULT_SENDER_OPTIONS,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Called in the transaction that persists a local event (or accepts a remote user's membership
   * through send_join, send_leave or send_knock, which the resident server passes on): marks its
   * destinations, but `except` (the server it came from).
   */
  async enqueue(
    lock: RoomLock,
    event: RoomEvent,
    position: number,
    opts: { except?: string; stateGroup?: number } = {},
  ): Promise<string[]> {
    const { except } = opts;
    if (except !== undefined) await outbox.markOutbound(lock.trx, event.event_id);
    const destinations = new Set(await this.joinedServers(lock, opts.stateGroup));
    if (except !== undefined) destinations.delete(except);
    if (event.type === 'm.room.member' && typeof event.state_key === 'string') {
      const target = event.state_key.slice(event.state_key.indexOf(':') + 1);
      if (target !== this.serverName && target !== except) destinations.add(target);
    }
    for (const d of destinations) await outbox.markRoomForDestination(lock.trx, d, lock.roomId, position);
    return [...destinations];
  }

  /**
   * The other servers with joined users in the room. The memberships table follows the room's
   * current state group, and a group never changes once written, so the answer for a group is
   * kept (most events, messages, leave the group as it was).
   */
  private async joinedServers(lock: RoomLock, stateGroup: number | undefined): Promise<string[]> {
    const cached = stateGroup !== undefined ? this.joinedByGroup.get(stateGroup) : undefined;
    if (cached) return cached;
    const servers = await outbox.joinedServers(lock.trx, lock.roomId, this.serverName);
    if (stateGroup !== undefined) {
      if (this.joinedByGroup.size >= JOINED_CACHE_LIMIT) {
        const oldest = this.joinedByGroup.keys().next().value;
        if (oldest !== undefined) this.joinedByGroup.delete(oldest);
      }
      this.joinedByGroup.set(stateGroup, servers);
    }
    return servers;
  }

  /**
   * Queues an EDU for `destination` (never this server) and wakes its queue: it rides the next
   * transaction to the destination, with the PDUs it is owed, 100 EDUs at most per transaction
   * (persistent ones first, in the order queued). A destination in backoff gets it when the
   * backoff ends or it contacts us.
   */
  async queueEdu(destination: string, edu: Edu, opts: QueueEduOptions = {}): Promise<void> {
    if (destination === this.serverName || this.stopped) return;
    if (opts.persistent) {
      await outbox.queuePersistentEdus(this.db, destination, [edu], this.now());
    } else {
      let waiting = this.ephemeral.get(destination);
      if (!waiting) {
        waiting = new Map();
        this.ephemeral.set(destination, waiting);
      }
      const key = opts.key ?? `#${++this.eduSerial}`;
      waiting.delete(key); // Re-inserted last: the map stays in the order of the latest updates.
      waiting.set(key, { edu, expiresAt: this.now() + (opts.ttlMs ?? DEFAULT_EPHEMERAL_TTL_MS) });
      if (waiting.size > MAX_EPHEMERAL_PER_DESTINATION) {
        const oldest = waiting.keys().next().value;
        if (oldest !== undefined) waiting.delete(oldest);
      }
    }
    this.wake(destination);
  }

  /**
   * Persistent EDUs for `destination`, queued in the caller's database transaction (so that they
   * go out if and only if it commits); call wake(destination) once it has.
   */
  async queuePersistentIn(trx: Executor, destination: string, edus: readonly Edu[]): Promise<void> {
    if (destination === this.serverName || edus.length === 0) return;
    await outbox.queuePersistentEdus(trx, destination, edus, this.now());
  }

  /** queueEdu for each of `destinations`. */
  async queueEduFor(destinations: Iterable<string>, edu: Edu, opts: QueueEduOptions = {}): Promise<void> {
    for (const d of destinations) await this.queueEdu(d, edu, opts);
  }

  /** How many ephemeral EDUs wait for `destination` in this process (for tests and metrics). */
  ephemeralWaiting(destination: string): number {
    return this.ephemeral.get(destination)?.size ?? 0;
  }

  /** Starts sending to every destination with a backlog (after a restart). */
  async start(): Promise<void> {
    for (const d of await outbox.destinationsWithBacklog(this.db)) this.wake(d);
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.ephemeral.clear();
  }

  /** Sends now whatever `destination` is owed (a new event, or it contacted us: it is up). */
  wake(destination: string, opts: { resetBackoff?: boolean } = {}): void {
    if (this.stopped) return;
    const timer = this.timers.get(destination);
    if (opts.resetBackoff && timer) {
      clearTimeout(timer);
      this.timers.delete(destination);
    } else if (timer) {
      return; // Backing off: the timer will send.
    }
    if (this.running.has(destination)) {
      this.again.add(destination);
      return;
    }
    const run = this.drain(destination, opts.resetBackoff ?? false)
      .catch(() => {})
      .finally(() => {
        this.running.delete(destination);
        if (this.again.delete(destination)) this.wake(destination);
      });
    this.running.set(destination, run);
  }

  /** How many destinations this process is sending to now (for the metrics). */
  get sending(): number {
    return this.running.size;
  }

  /** Resolves once nothing is being sent (for tests and shutdown). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.all(this.running.values());
  }

  private async drain(destination: string, resetBackoff: boolean): Promise<void> {
    if (resetBackoff) await outbox.resetBackoff(this.db, destination);
    for (;;) {
      if (this.stopped) return;
      const sent = await this.sendOne(destination);
      if (sent !== 'sent') return;
    }
  }

  /**
   * One transaction to `destination`: 'sent', 'empty' (nothing owed) or 'failed'. No database
   * transaction is held across the request. Two processes may send the same PDUs: the ID of a
   * transaction of PDUs alone is derived from the positions it covers, so the destination
   * processes it once; a transaction with EDUs gets an ID of its own (EDUs are not derived from
   * positions), and its PDUs, if sent twice, are duplicates the destination ignores.
   */
  private async sendOne(destination: string): Promise<'sent' | 'empty' | 'failed'> {
    const row = await outbox.destination(this.db, destination);
    const after = row?.last_successful_stream_ordering ?? 0;
    const pending = row ? await this.sendable(destination, after) : [];
    const persistent = await outbox.pendingPersistentEdus(this.db, destination, MAX_EDUS_PER_TXN);
    const ephemeral = this.takeEphemeral(destination, MAX_EDUS_PER_TXN - persistent.length);
    if (pending.length === 0 && persistent.length === 0 && ephemeral.length === 0) return 'empty';
    const upTo = pending.at(-1)?.stream_ordering ?? after;
    const edus: Edu[] = [
      ...persistent.map((e) => ({ edu_type: e.edu_type, content: e.content })),
      ...ephemeral.map(([, w]) => w.edu),
    ];
    const txnId =
      edus.length === 0 ? `${after}-${upTo}` : `${after}-${upTo}-${this.instance}-${++this.eduSerial}`;
    const versions = await this.roomVersions(pending.map((r) => r.room_id));
    try {
      await this.requester.request({
        destination,
        method: 'PUT',
        path: `/_matrix/federation/v1/send/${txnId}`,
        body: {
          origin: this.serverName,
          origin_server_ts: this.now(),
          pdus: pending.flatMap((r) => {
            const rv = versions.get(r.room_id);
            return rv ? [toWire(store.toEvent(r), rv)] : [];
          }),
          ...(edus.length > 0 ? { edus: edus as unknown as JsonObject[] } : {}),
        },
      });
    } catch {
      if (!row) await outbox.ensureDestination(this.db, destination);
      const interval = Math.min(
        Math.max((row?.retry_interval_ms ?? 0) * 2, this.options.minRetryMs),
        this.options.maxRetryMs,
      );
      await outbox.recordFailure(this.db, destination, interval, this.now());
      this.retryLater(destination, interval);
      return 'failed';
    }
    // Sent: what was carried is done with (unless an ephemeral EDU was replaced meanwhile).
    const waiting = this.ephemeral.get(destination);
    for (const [key, w] of ephemeral) if (waiting?.get(key) === w) waiting.delete(key);
    if (waiting?.size === 0) this.ephemeral.delete(destination);
    await outbox.deletePersistentEdus(
      this.db,
      destination,
      persistent.map((e) => e.id),
    );
    if (row) await outbox.recordSuccess(this.db, destination, upTo, this.now());
    return 'sent';
  }

  /**
   * The destination's pending events after `after`, but none past a stream position still in
   * flight: the acknowledged position moves to the last event sent, so an event that commits
   * later below it would never be sent. Events held back are tried again shortly (the commit of
   * the position in flight may wake only the destinations of its own room).
   */
  private async sendable(destination: string, after: number): Promise<PduRow[]> {
    const rows = await outbox.pendingEvents(this.db, destination, after, MAX_PDUS_PER_TXN);
    const last = rows.at(-1);
    if (!last) return rows;
    const persisted = await currentPosition(this.db);
    if ((last.stream_ordering ?? 0) <= persisted) return rows;
    if (!this.timers.has(destination)) this.retryLater(destination, HELD_BACK_RETRY_MS);
    return rows.filter((r) => (r.stream_ordering ?? 0) <= persisted);
  }

  /** Up to `limit` ephemeral EDUs for `destination`, oldest first; drops those expired. */
  private takeEphemeral(destination: string, limit: number): Array<[string, WaitingEdu]> {
    const waiting = this.ephemeral.get(destination);
    if (!waiting) return [];
    const now = this.now();
    const out: Array<[string, WaitingEdu]> = [];
    for (const [key, w] of waiting) {
      if (w.expiresAt <= now) {
        waiting.delete(key);
        continue;
      }
      if (out.length < limit) out.push([key, w]);
    }
    if (waiting.size === 0) this.ephemeral.delete(destination);
    return out;
  }

  /** The versions of rooms (which never change), kept once read. */
  private async roomVersions(roomIds: readonly string[]): Promise<Map<string, RoomVersion>> {
    const out = new Map<string, RoomVersion>();
    const missing: string[] = [];
    for (const id of new Set(roomIds)) {
      const known = this.versionOf.get(id);
      if (known) out.set(id, known);
      else missing.push(id);
    }
    if (missing.length > 0) {
      const rows = await rooms.roomVersionsOf(this.db, missing);
      if (this.versionOf.size + rows.length > JOINED_CACHE_LIMIT) this.versionOf.clear();
      for (const r of rows) {
        const rv = getRoomVersion(r.room_version);
        if (!rv) continue;
        this.versionOf.set(r.room_id, rv);
        out.set(r.room_id, rv);
      }
    }
    return out;
  }

  private retryLater(destination: string, ms: number): void {
    if (this.stopped) return;
    const timer = setTimeout(() => {
      this.timers.delete(destination);
      this.wake(destination);
    }, ms);
    timer.unref();
    this.timers.set(destination, timer);
  }
}
