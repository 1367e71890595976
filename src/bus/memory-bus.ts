import { type Bus, type BusListener, ListenerSet } from './bus.ts';

/** The in-process bus: for a single server process, no external service. */
export class MemoryBus implements Bus {
  readonly kind = 'memory' as const;
  readonly description = 'in-process';
  private readonly listeners = new ListenerSet();

  healthy(): boolean {
    return true;
  }

  async publish(channel: string, message: string): Promise<void> {
    // Deliver asynchronously, like a real broker, so publishers never re-enter listeners.
    queueMicrotask(() => this.listeners.emit(channel, message));
  }

  async subscribe(channel: string, listener: BusListener): Promise<() => Promise<void>> {
    this.listeners.add(channel, listener);
    return async () => {
      this.listeners.remove(channel, listener);
    };
  }

  async close(): Promise<void> {
    this.listeners.clear();
  }
}
