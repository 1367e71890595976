/**
 * The bus between server processes. It carries small notifications (stream positions, names of
 * changed things), never the data itself: receivers read the data from the database.
 */
export type BusListener = (message: string) => void;

export interface Bus {
  /** 'memory' (one process) or 'redis' (many processes sharing one Redis). */
  readonly kind: 'memory' | 'redis';
  /** Where the bus lives, safe to log. */
  readonly description: string;
  /**
   * Whether messages flow between processes right now. A process that cannot be told (Redis down)
   * must not trust what it caches on the strength of the bus: the session cache and the notifier
   * fall back to the database while this is false.
   */
  healthy(): boolean;
  /**
   * Publishes to every process; never fails. While the bus is down the message reaches this
   * process's listeners only (the others read the database meanwhile).
   */
  publish(channel: string, message: string): Promise<void>;
  /** Subscribes to a channel; returns a function that unsubscribes. */
  subscribe(channel: string, listener: BusListener): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/** Keeps listeners per channel; shared by both bus implementations for local fan-out. */
export class ListenerSet {
  private readonly byChannel = new Map<string, Set<BusListener>>();

  add(channel: string, listener: BusListener): boolean {
    let set = this.byChannel.get(channel);
    const first = set === undefined;
    if (!set) {
      set = new Set();
      this.byChannel.set(channel, set);
    }
    set.add(listener);
    return first;
  }

  /** Removes a listener; returns true when the channel has no listeners left. */
  remove(channel: string, listener: BusListener): boolean {
    const set = this.byChannel.get(channel);
    if (!set) return false;
    set.delete(listener);
    if (set.size === 0) {
      this.byChannel.delete(channel);
      return true;
    }
    return false;
  }

  emit(channel: string, message: string): void {
    for (const listener of this.byChannel.get(channel) ?? []) {
      try {
        listener(message);
      } catch {
        // One failing listener must not keep the others from hearing the message.
      }
    }
  }

  clear(): void {
    this.byChannel.clear();
  }
}
