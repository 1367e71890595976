import type { RoomLock } from '../../events/room-lock.ts';
import type { RoomEvent } from '../../protocol/event.ts';
import type { Db } from '../../storage/connect.ts';
import * as store from '../../storage/events.repository.ts';
import * as outbox from '../../storage/federation.repository.ts';
import type { Requester } from '../inbound/fetch-missing.ts';
import { toWire } from '../pdu.ts';

export interface SenderOptions {
  /** First retry delay after a failure; doubled per failure up to `maxRetryMs`. */
  minRetryMs: number;
  maxRetryMs: number;
}

const JOINED_CACHE_LIMIT = 1_000;

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

  /** Starts sending to every destination with a backlog (after a restart). */
  async start(): Promise<void> {
    for (const d of await outbox.destinationsWithBacklog(this.db)) this.wake(d);
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
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
   * transaction is held across the request. Two processes may send the same transaction: its ID
   * is derived from the positions it covers, so the destination processes it once.
   */
  private async sendOne(destination: string): Promise<'sent' | 'empty' | 'failed'> {
    const row = await outbox.destination(this.db, destination);
    if (!row) return 'empty';
    const after = row.last_successful_stream_ordering ?? 0;
    const pending = await outbox.pendingEvents(this.db, destination, after, 50);
    if (pending.length === 0) return 'empty';
    const upTo = pending.at(-1)!.stream_ordering!;
    try {
      await this.requester.request({
        destination,
        method: 'PUT',
        path: `/_matrix/federation/v1/send/${after}-${upTo}`,
        body: {
          origin: this.serverName,
          origin_server_ts: this.now(),
          pdus: pending.map((r) => toWire(store.toEvent(r))),
        },
      });
    } catch {
      const interval = Math.min(
        Math.max(row.retry_interval_ms * 2, this.options.minRetryMs),
        this.options.maxRetryMs,
      );
      await outbox.recordFailure(this.db, destination, interval, this.now());
      this.retryLater(destination, interval);
      return 'failed';
    }
    await outbox.recordSuccess(this.db, destination, upTo, this.now());
    return 'sent';
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
