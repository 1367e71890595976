import { Redis } from 'ioredis';
import { redactUrl } from '../storage/connect.ts';
import { type Bus, type BusListener, ListenerSet } from './bus.ts';

/**
 * The bus over Redis pub/sub, for several server processes. One connection publishes; a second
 * one, in subscriber mode, receives and fans messages out to local listeners.
 */
export class RedisBus implements Bus {
  readonly kind = 'redis' as const;
  readonly description: string;
  private readonly listeners = new ListenerSet();

  private constructor(
    private readonly pub: Redis,
    private readonly sub: Redis,
    url: string,
  ) {
    this.description = `redis ${redactUrl(url)}`;
    this.sub.on('message', (channel: string, message: string) => this.listeners.emit(channel, message));
  }

  /** Connects both connections; rejects when Redis cannot be reached. */
  static async connect(url: string): Promise<RedisBus> {
    const options = { lazyConnect: true, maxRetriesPerRequest: 3, enableOfflineQueue: true };
    const pub = new Redis(url, options);
    const sub = new Redis(url, options);
    // ioredis reconnects by itself; without a listener each failed attempt is printed as an
    // "unhandled error event". Connection failure at start is reported by connect() below.
    for (const conn of [pub, sub]) conn.on('error', () => {});
    try {
      await Promise.all([pub.connect(), sub.connect()]);
      await pub.ping();
    } catch (err) {
      pub.disconnect();
      sub.disconnect();
      throw new Error(`cannot reach Redis at ${redactUrl(url)}: ${(err as Error).message}`);
    }
    return new RedisBus(pub, sub, url);
  }

  healthy(): boolean {
    return this.pub.status === 'ready' && this.sub.status === 'ready';
  }

  async publish(channel: string, message: string): Promise<void> {
    // Without Redis, waiting for it would fail the request that made the change, which is already
    // committed: tell this process's listeners and let the others find it in the database.
    if (this.pub.status !== 'ready') {
      this.listeners.emit(channel, message);
      return;
    }
    try {
      await this.pub.publish(channel, message);
    } catch {
      this.listeners.emit(channel, message);
    }
  }

  async subscribe(channel: string, listener: BusListener): Promise<() => Promise<void>> {
    if (this.listeners.add(channel, listener)) await this.sub.subscribe(channel);
    return async () => {
      if (this.listeners.remove(channel, listener)) await this.sub.unsubscribe(channel);
    };
  }

  async close(): Promise<void> {
    this.listeners.clear();
    await Promise.allSettled([this.pub.quit(), this.sub.quit()]);
  }
}
