import type { Bus, BusListener } from './bus.ts';

/**
 * A bus whose channels carry a prefix, so that homeservers sharing one Redis never hear each
 * other. Stream positions are only meaningful within one database: a position announced by
 * another homeserver would corrupt the change cache.
 */
export class NamespacedBus implements Bus {
  constructor(
    private readonly inner: Bus,
    private readonly namespace: string,
  ) {}

  get kind() {
    return this.inner.kind;
  }

  get description() {
    return this.inner.description;
  }

  healthy(): boolean {
    return this.inner.healthy();
  }

  publish(channel: string, message: string): Promise<void> {
    return this.inner.publish(`${this.namespace}.${channel}`, message);
  }

  subscribe(channel: string, listener: BusListener): Promise<() => Promise<void>> {
    return this.inner.subscribe(`${this.namespace}.${channel}`, listener);
  }

  /** The inner bus belongs to whoever opened it; closing the view does nothing. */
  async close(): Promise<void> {}
}
