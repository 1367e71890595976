import type { Bus } from '../bus/bus.ts';

/**
 * Wakes waiting syncs when something they may care about changed. Changes travel over the bus as
 * positions and names only (never data), so every process, this one included, hears every
 * change; a woken sync reads what changed from the database.
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
}

export type StreamChangeKind =
  | 'event'
  | 'receipt'
  | 'account_data'
  | 'typing'
  | 'to_device'
  | 'device_list'
  | 'keys';

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

  constructor(private readonly bus: Bus) {}

  async start(): Promise<void> {
    this.unsubscribe = await this.bus.subscribe(CHANNEL, (message) => {
      try {
        this.deliver(JSON.parse(message) as StreamChange);
      } catch {
        // A malformed message wakes nobody.
      }
    });
  }

  async stop(): Promise<void> {
    await this.unsubscribe?.();
    for (const w of this.waiters) w.wake();
    this.waiters.clear();
  }

  /** Announces a change to every process. */
  async notify(change: StreamChange): Promise<void> {
    await this.bus.publish(CHANNEL, JSON.stringify(change));
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
    this.recent.push({ seq: this.seq, change });
    if (this.recent.length > RECENT) this.recent.shift();
    for (const w of [...this.waiters]) {
      if (concerns(change, w.userId, w.roomIds)) w.wake();
    }
  }
}

function concerns(change: StreamChange, userId: string, roomIds: ReadonlySet<string>): boolean {
  return (
    (change.roomId !== undefined && roomIds.has(change.roomId)) || (change.userIds?.includes(userId) ?? false)
  );
}
