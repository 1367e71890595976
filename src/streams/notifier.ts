import type { Bus } from '../bus/bus.ts';

/**
 * Wakes waiting syncs when something they may care about changed. Changes travel over the bus as
 * positions and names only (never data), so every process, this one included, hears every
 * change; a woken sync reads what changed from the database.
 */
export interface StreamChange {
  /** Stream position of a persistent change, if it has one (typing has none). */
  position?: number;
  /** Room the change happened in. */
  roomId?: string;
  /** Users the change concerns directly (a membership target, an account data owner, ...). */
  userIds?: string[];
}

interface Waiter {
  userId: string;
  roomIds: ReadonlySet<string>;
  wake: () => void;
}

const CHANNEL = 'conclave.stream';

export class Notifier {
  private readonly waiters = new Set<Waiter>();
  private unsubscribe: (() => Promise<void>) | undefined;

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
  wait(userId: string, roomIds: ReadonlySet<string>, timeoutMs: number, signal?: AbortSignal): Promise<void> {
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

  private deliver(change: StreamChange): void {
    for (const w of [...this.waiters]) {
      if (
        (change.roomId !== undefined && w.roomIds.has(change.roomId)) ||
        (change.userIds?.includes(w.userId) ?? false)
      ) {
        w.wake();
      }
    }
  }
}
