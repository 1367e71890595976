import { randomUUID } from 'node:crypto';
import type { Bus } from '../bus/bus.ts';
import { ChangeCache } from './change-cache.ts';

/**
 * Wakes waiting syncs when something they may care about changed. Changes travel over the bus as
 * positions and names only (never data), so every process hears every change (this one at once,
 * the others through the bus); a woken sync reads what changed from the database, and the
 * change cache (`changes`) tells it where to look.
 */
export interface StreamChange {
  /** What changed: sync uses it to skip the streams that cannot have anything new. */
  kind: StreamChangeKind;
  /** Stream position of a persistent change, if it has one (typing has none). */
  position?: number;
  /** Room the change happened in. */
  roomId?: string;
  /** Users the change concerns directly (a membership target, an account data owner, ...). */
  userIds?: string[];
  /** Further rooms whose members it concerns (the rooms of a user whose presence changed). */
  roomIds?: string[];
  /** For a redaction: the event it redacts (whose cached copies must go). */
  redacts?: string;
  /**
   * Anything may have changed for anyone (changes made while the bus was down, found in the
   * database): every waiter wakes and every cache drops what it holds.
   */
  everyone?: boolean;
}

export type StreamChangeKind =
  | 'event'
  | 'receipt'
  | 'account_data'
  | 'typing'
  | 'to_device'
  | 'device_list'
  | 'keys'
  | 'presence';

interface Waiter {
  userId: string;
  roomIds: ReadonlySet<string>;
  wake: () => void;
}

const CHANNEL = 'conclave.stream';

const RECENT = 1024;

export class Notifier {
  private readonly waiters = new Set<Waiter>();
  private unsubscribe: (() => Promise<void>) | undefined;
  /** Sequence number of the latest change this process heard of, and the latest changes. */
  private seq = 0;
  private readonly recent: Array<{ seq: number; change: StreamChange }> = [];

  /**
   * A mark to take before reading what a sync will answer: `wait` with that mark returns at once
   * if a relevant change arrived after it, so nothing committed between the read and the wait is
   * slept through.
   */
  get mark(): number {
    return this.seq;
  }

  /** Recent changes by position; undefined until `start` was given the current position. */
  changes: ChangeCache | undefined;
  private readonly listeners = new Set<(change: StreamChange) => void>();
  /** Tells this process's own announcements apart when the bus echoes them back. */
  private readonly origin = randomUUID();

  private busWatch: NodeJS.Timeout | undefined;
  private lastPolled = 0;

  constructor(private readonly bus: Bus) {}

  /**
   * While the bus is down (and for a few seconds after it is back), reads the stream position from the
   * database every `intervalMs`: when other processes wrote meanwhile, this process's syncs are
   * woken and read from the database, so their clients still see those writes within a few
   * seconds, and all of it once the bus returns.
   */
  watchBus(readPosition: () => Promise<number>, intervalMs = 1000): void {
    // Subscriptions are renewed just after Redis is back, and a message published meanwhile is
    // lost: polling goes on for a few seconds after the bus looks healthy again.
    let pollUntil = 0;
    let busy = false;
    this.busWatch = setInterval(() => {
      const now = Date.now();
      if (!this.bus.healthy()) pollUntil = now + 5 * intervalMs;
      if (now >= pollUntil || busy) return;
      busy = true;
      readPosition()
        .then((position) => {
          const known = this.changes?.position ?? this.lastPolled;
          if (position > Math.max(known, this.lastPolled)) {
            this.changes?.skipTo(position);
            this.deliver({ kind: 'event', position, everyone: true });
          }
          this.lastPolled = position;
        })
        .catch(() => {
          // The database is away too: try again at the next tick.
        })
        .finally(() => {
          busy = false;
        });
    }, intervalMs);
    this.busWatch.unref();
  }

  /**
   * Subscribes to the bus. With `currentPosition` (read after subscribing, so no change falls
   * between the two), also keeps the change cache from that position on.
   */
  async start(currentPosition?: () => Promise<number>): Promise<void> {
    this.unsubscribe = await this.bus.subscribe(CHANNEL, (message) => {
      try {
        const { origin, ...change } = JSON.parse(message) as StreamChange & { origin?: string };
        if (origin === this.origin) return;
        this.deliver(change);
      } catch {
        // A malformed message wakes nobody.
      }
    });
    if (currentPosition) {
      const cache = new ChangeCache(await currentPosition());
      // Changes heard while the position was being read are in `recent`.
      for (const r of this.recent) cache.record(r.change);
      this.changes = cache;
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.busWatch);
    await this.unsubscribe?.();
    for (const w of this.waiters) w.wake();
    this.waiters.clear();
  }

  /** Calls `listener` with every change this process hears (for caches that must drop entries). */
  onChange(listener: (change: StreamChange) => void): void {
    this.listeners.add(listener);
  }

  /** Announces a change to this process at once and to every other process over the bus. */
  async notify(change: StreamChange): Promise<void> {
    this.deliver(change);
    await this.bus.publish(CHANNEL, JSON.stringify({ ...change, origin: this.origin }));
  }

  /** Announces a change to this process only (ephemeral state already shared another way). */
  notifyLocal(change: StreamChange): void {
    this.deliver(change);
  }

  /**
   * Resolves when a change concerning the user or one of the rooms arrives, when the timeout
   * passes, or when the signal aborts; whichever comes first.
   */
  wait(
    userId: string,
    roomIds: ReadonlySet<string>,
    timeoutMs: number,
    signal?: AbortSignal,
    mark?: number,
  ): Promise<void> {
    if (mark !== undefined && this.changedSince(mark, userId, roomIds)) return Promise.resolve();
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const waiter: Waiter = {
        userId,
        roomIds,
        wake: () => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          signal?.removeEventListener('abort', waiter.wake);
          resolve();
        },
      };
      this.waiters.add(waiter);
      timer = setTimeout(waiter.wake, Math.max(0, timeoutMs));
      signal?.addEventListener('abort', waiter.wake, { once: true });
    });
  }

  private changedSince(mark: number, userId: string, roomIds: ReadonlySet<string>): boolean {
    if (mark >= this.seq) return false;
    // Older than what is remembered: assume something relevant happened.
    if ((this.recent[0]?.seq ?? Number.POSITIVE_INFINITY) > mark + 1) return true;
    return this.recent.some((r) => r.seq > mark && concerns(r.change, userId, roomIds));
  }

  private deliver(change: StreamChange): void {
    this.seq++;
    this.changes?.record(change);
    for (const listener of this.listeners) listener(change);
    this.recent.push({ seq: this.seq, change });
    if (this.recent.length > RECENT) this.recent.shift();
    for (const w of [...this.waiters]) {
      if (concerns(change, w.userId, w.roomIds)) w.wake();
    }
  }
}

function concerns(change: StreamChange, userId: string, roomIds: ReadonlySet<string>): boolean {
  return (
    change.everyone === true ||
    (change.roomId !== undefined && roomIds.has(change.roomId)) ||
    (change.roomIds?.some((r) => roomIds.has(r)) ?? false) ||
    (change.userIds?.includes(userId) ?? false)
  );
}
